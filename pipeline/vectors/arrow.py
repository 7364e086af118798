"""numpy columns <-> pyarrow arrays through their buffers, without pandas.

``pyarrow.array(ndarray)`` and ``Array.to_numpy()`` import pandas on first use (pyarrow's pandas
shim asks whether the value is a pandas object): about 0.25 s of CPU in every process that
writes or reads a shard file. Building arrays from buffers and reading them back through their
buffers (or ``to_pylist`` for strings and bytes) never does. Types: ``int64``, ``float64``,
``bool_``, ``binary``, ``large_string`` (the piece and feature columns of the vectorise stage).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: arrow type name -> numpy dtype of the fixed-width types
_FIXED = {"int64": np.dtype("<i8"), "float64": np.dtype("<f8")}
#: arrow type name -> (offset dtype, whether values are str)
_VARIABLE: dict[str, tuple[np.dtype[Any], bool]] = {"binary": (np.dtype("<i4"), False),
                                                     "large_string": (np.dtype("<i8"), True)}


def _validity(values: np.ndarray) -> tuple[Any, int]:
    """The validity bitmap of an object column (None: null) and its null count; (None, 0) without nulls."""
    import pyarrow as pa

    null = np.fromiter((v is None for v in values.tolist()), dtype=bool, count=len(values))
    if not null.any():
        return None, 0
    return pa.py_buffer(np.packbits(~null, bitorder="little")), int(null.sum())


def to_arrow(values: np.ndarray, type_name: str) -> Any:
    """A numpy column as a pyarrow array of type ``type_name`` (floats keep NaN as NaN, as
    ``pyarrow.array`` keeps them; None in an object column is null)."""
    import pyarrow as pa

    typ = getattr(pa, type_name)()
    n = len(values)
    if type_name in _FIXED:
        data = np.ascontiguousarray(values, dtype=_FIXED[type_name])
        return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(data)])
    if type_name == "bool_":
        bits = np.packbits(np.asarray(values, dtype=bool), bitorder="little")
        return pa.Array.from_buffers(typ, n, [None, pa.py_buffer(bits)])
    if type_name not in _VARIABLE:
        raise ValueError(f"arrow type {type_name!r}: not one of int64, float64, bool_, binary, large_string")
    off_dtype, text = _VARIABLE[type_name]
    items = [b"" if v is None else (v.encode() if text else bytes(v)) for v in values.tolist()]
    offsets: np.ndarray = np.zeros(n + 1, dtype=off_dtype)
    np.cumsum([len(v) for v in items], out=offsets[1:])
    valid, nulls = _validity(np.asarray(values, dtype=object))
    return pa.Array.from_buffers(typ, n, [valid, pa.py_buffer(offsets), pa.py_buffer(b"".join(items))],
                                 null_count=nulls)


def to_numpy(column: Any) -> np.ndarray:
    """A pyarrow (chunked) array as numpy: int64 / float64 / bool arrays (nulls: NaN, the ints
    then as float64, as ``to_numpy`` gives them), strings and bytes as object arrays (nulls: None)."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n, typ = len(arr), arr.type
    if pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ) \
            or pa.types.is_large_binary(typ):
        out = np.empty(n, dtype=object)
        out[:] = arr.to_pylist()
        return out
    bufs = arr.buffers()
    if pa.types.is_boolean(typ):
        vals = np.unpackbits(np.frombuffer(bufs[1], dtype=np.uint8), bitorder="little",
                             count=arr.offset + n)[arr.offset:].astype(bool) if n else np.zeros(0, dtype=bool)
    elif pa.types.is_integer(typ) or pa.types.is_floating(typ):
        kind = "f" if pa.types.is_floating(typ) else "i" if pa.types.is_signed_integer(typ) else "u"
        dtype = np.dtype(f"<{kind}{typ.bit_width // 8}")
        vals = np.frombuffer(bufs[1], dtype=dtype, count=n, offset=arr.offset * dtype.itemsize).copy() if n \
            else np.zeros(0, dtype=dtype)
    else:
        raise ValueError(f"arrow type {typ}: not read here (ints, floats, bools, strings, bytes)")
    if arr.null_count:
        null = ~np.unpackbits(np.frombuffer(bufs[0], dtype=np.uint8), bitorder="little",
                              count=arr.offset + n)[arr.offset:].astype(bool)
        vals = vals.astype(np.float64)
        vals[null] = np.nan
    return vals
