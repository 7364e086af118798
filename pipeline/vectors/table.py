"""A column table without pandas: the piece and feature tables of the vectorise stage.

Importing pandas costs about 0.2 s of CPU and geopandas (with pyproj) another 0.05 s, in every
``Vectorize`` process (one per shard); the stage only filters, concatenates and reorders rows
of a few columns, which numpy does as well. Columns are numpy arrays of one length, geometries
an object array of shapely geometries. :meth:`Table.to_pandas` and :func:`to_geodataframe` give
the pandas forms where a caller wants them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, overload

import numpy as np

if TYPE_CHECKING:
    import geopandas as gpd
    import pandas as pd


class Table:
    """Named numpy columns of equal length, in order. ``t["name"]`` is a column, ``t[rows]``
    (a boolean mask or integer indices) the rows as a new table, ``t["name"] = values`` sets a
    column (a scalar is broadcast)."""

    __slots__ = ("cols",)

    def __init__(self, cols: dict[str, Any]) -> None:
        n = max((len(v) for v in cols.values() if np.ndim(v) > 0), default=0)
        self.cols: dict[str, np.ndarray] = {}
        for k, v in cols.items():
            self[k] = v if np.ndim(v) > 0 else np.full(n, v, dtype=object if isinstance(v, str) else None)

    @property
    def columns(self) -> list[str]:
        """The column names, in order."""
        return list(self.cols)

    def __len__(self) -> int:
        return len(next(iter(self.cols.values()))) if self.cols else 0

    @overload
    def __getitem__(self, key: str) -> np.ndarray: ...

    @overload
    def __getitem__(self, key: np.ndarray) -> Table: ...

    def __getitem__(self, key: str | np.ndarray) -> np.ndarray | Table:
        if isinstance(key, str):
            return self.cols[key]
        return Table({k: v[key] for k, v in self.cols.items()})

    def __setitem__(self, key: str, values: Any) -> None:
        if np.ndim(values) == 0:
            values = np.full(len(self), values, dtype=object if isinstance(values, str) else None)
        arr = np.asarray(values) if not isinstance(values, np.ndarray) else values
        if self.cols and len(arr) != len(self) and key not in self.cols:
            raise ValueError(f"column {key!r}: {len(arr)} values for a table of {len(self)} rows")
        self.cols[key] = arr

    def select(self, names: Sequence[str]) -> Table:
        """The columns ``names`` in that order."""
        return Table({k: self.cols[k] for k in names})

    def to_pandas(self) -> pd.DataFrame:
        """The table as a pandas DataFrame (a default index)."""
        import pandas as pd

        return pd.DataFrame(dict(self.cols))


def concat_tables(parts: Iterable[Table], empty: Table) -> Table:
    """Rows of ``parts`` one after the other (the columns of ``empty``, in its order); no rows:
    ``empty``. Parts without rows are skipped, so they cannot change a column's dtype."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty
    return Table({k: np.concatenate([p[k] for p in parts]) for k in empty.columns})


def to_geodataframe(t: Table, crs: Any) -> gpd.GeoDataFrame:
    """A feature table (column ``geometry`` last) as a GeoDataFrame in ``crs``."""
    import geopandas as gpd
    import pandas as pd

    props = {k: v for k, v in t.cols.items() if k != "geometry"}
    return gpd.GeoDataFrame(pd.DataFrame(props), geometry=t["geometry"], crs=crs)
