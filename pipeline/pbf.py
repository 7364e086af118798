"""Block-level reading of OSM PBF files, without decoding their contents.

A PBF file is a sequence of blocks: a 4-byte big-endian length, a ``BlobHeader`` protobuf
(type ``OSMHeader`` or ``OSMData``, and the size of what follows), then a ``Blob`` (raw, zlib
or lzma compressed ``PrimitiveBlock``). A ``PrimitiveBlock`` holds a string table and groups
of one object type each (nodes, dense nodes, ways, relations).

Used by :mod:`pipeline.osm` to find the relations of a type-sorted PBF (nodes, then ways, then
relations): only a handful of blocks are decompressed, and only as far as their first group.
"""

from __future__ import annotations

import lzma
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

#: PrimitiveGroup field numbers: what a group holds
NODES, DENSE_NODES, WAYS, RELATIONS = 1, 2, 3, 4

#: what reading a damaged or unusual PBF here can raise (callers fall back to plain reading)
PBF_ERRORS = (ValueError, IndexError, struct.error, zlib.error, lzma.LZMAError, OSError)


def relation_tail(path: str | Path, max_bytes: int | None = None) -> bytes:
    """The header block + the blocks from the last one that may hold relations to the end of
    a type-sorted PBF file, as the bytes of a valid, smaller PBF file.

    A binary search finds the first block whose first group holds relations; the block before
    it may end with relations, so it is included. Raises one of :data:`PBF_ERRORS` on an
    unexpected layout (first block not ``OSMHeader``, truncated file, lz4/zstd blocks...), and
    ValueError when the result would exceed ``max_bytes``.
    """
    with open(path, "rb") as fh:
        blocks = block_index(fh)
        if not blocks or blocks[0][0] != "OSMHeader" or any(t != "OSMData" for t, _, _ in blocks[1:]):
            raise ValueError(f"{path}: unexpected PBF block layout")
        lo, hi = 1, len(blocks)
        while lo < hi:
            mid = (lo + hi) // 2
            if first_group(fh, blocks[mid]) == RELATIONS:
                hi = mid
            else:
                lo = mid + 1
        start = max(1, lo - 1)
        tail_start = blocks[start][1] if start < len(blocks) else blocks[-1][2]
        if max_bytes is not None and blocks[0][2] + blocks[-1][2] - tail_start > max_bytes:
            raise ValueError(f"{path}: relation blocks exceed {max_bytes} bytes")
        fh.seek(0)
        head = fh.read(blocks[0][2])
        fh.seek(tail_start)
        return head + fh.read()


def block_index(fh: IO[bytes]) -> list[tuple[str, int, int]]:
    """(type, start, end) byte offsets of every block of an open PBF file."""
    size = os.fstat(fh.fileno()).st_size
    blocks: list[tuple[str, int, int]] = []
    pos = 0
    while pos < size:
        fh.seek(pos)
        (hlen,) = struct.unpack(">I", fh.read(4))
        header = dict(fields(fh.read(hlen)))
        end = pos + 4 + hlen + int(header[3])  # BlobHeader field 3: datasize
        if end > size:
            raise ValueError("truncated PBF")
        blocks.append((bytes(header[1]).decode(), pos, end))  # field 1: type
        pos = end
    return blocks


def first_group(fh: IO[bytes], block: tuple[str, int, int]) -> int:
    """What the first group of a data block holds (:data:`NODES` ... :data:`RELATIONS`; 0: no
    group). Decompresses only as much of the block as it needs."""
    _, start, end = block
    fh.seek(start)
    (hlen,) = struct.unpack(">I", fh.read(4))
    fh.seek(start + 4 + hlen)
    blob = dict(fields(fh.read(end - start - 4 - hlen)))
    size = 1 << 14
    while True:
        data = _inflate(blob, size)
        try:
            return _first_group_in(memoryview(data), complete=len(data) < size)
        except IndexError:  # what is decompressed so far ends before the first group
            size *= 4


def _inflate(blob: dict[int, Any], size: int) -> bytes:
    """At most the first ``size`` bytes of a Blob's content (fields: 1 raw, 3 zlib, 4 lzma)."""
    if 1 in blob:
        return bytes(blob[1][:size])
    if 3 in blob:
        return zlib.decompressobj().decompress(blob[3], size)
    if 4 in blob:
        return lzma.LZMADecompressor().decompress(blob[4], max_length=size)
    raise ValueError("unsupported PBF block compression (lz4 or zstd)")


def _first_group_in(view: memoryview, complete: bool) -> int:
    """The first field number of the first group (PrimitiveBlock field 2) in a possibly cut
    PrimitiveBlock; IndexError when ``view`` is cut before that is known."""
    i = 0
    while i < len(view):
        key, i = _varint(view, i)
        if key & 7 == 0:
            _, i = _varint(view, i)
        elif key & 7 == 2:
            length, i = _varint(view, i)
            if key >> 3 == 2 and length > 0:
                return _varint(view, i)[0] >> 3
            i += length
        else:
            raise ValueError("unexpected protobuf wire type in a PrimitiveBlock")
    if complete:
        return 0
    raise IndexError("cut block")


def fields(buf: bytes | memoryview) -> Iterator[tuple[int, Any]]:
    """(field number, value) of a protobuf message: ints for varints, memoryviews for
    length-delimited fields; fixed-width fields are skipped."""
    view = memoryview(buf)
    i, n = 0, len(view)
    while i < n:
        key, i = _varint(view, i)
        wire = key & 7
        if wire == 0:
            value, i = _varint(view, i)
            yield key >> 3, value
        elif wire == 2:
            length, i = _varint(view, i)
            if i + length > n:
                raise ValueError("protobuf field overruns its message")
            yield key >> 3, view[i:i + length]
            i += length
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")


def _varint(view: memoryview, i: int) -> tuple[int, int]:
    """Decode the base-128 varint at ``view[i:]``; returns (value, next index)."""
    value = shift = 0
    while True:
        byte = view[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
