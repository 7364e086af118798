"""The comparison block by block: a large region compared a square block of tiles at a time,
reading only what each block needs, so its memory is one block's, not the region's.

Every OSM feature, predicted polygon and candidate belongs to the block (a tile at zoom
``zoom - log2([compare] block_tiles)``) that holds the centre of its bounds (EPSG:4326 bounds,
the centre projected to EPSG:3857). A block compares what it owns against every feature of the
same class within :data:`MARGIN_M` ground metres of the block or of a feature it owns (a road
traced across the region brings the roads along it, not the buildings), so pairs, coverage and
unexplained area come out as in one comparison of the whole region: a candidate cut from a
prediction that crosses a block border is found in every block the prediction reaches and kept
by the one that holds its centre. Figures are summed from their additive parts
(:func:`pipeline.review.compare.summary_of`). The gap simulation runs per block on the block's
held-out tiles; the blocks' labelled pools are pooled (:func:`pipeline.review.review.pooled`), so
the calibration, ``min_score`` and the estimated curve are the region's. All blocks measure in
the region's one ground scale (:func:`pipeline.review.coverage.region_scale`). A region within
one block is compared exactly as before.

The features come from a :class:`Source`: frames in memory (:class:`InMemory`) or the region's
files, read block by block (:class:`pipeline.review.block_inputs.RegionFiles`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import shapely

from pipeline.config.compare import CompareSpec
from pipeline.config.region import ClassSpec
from pipeline.review.candidates import Evidence
from pipeline.review.compare import Comparison, compare, ranked_rows, summary_of
from pipeline.review.coverage import region_scale
from pipeline.review.figures import merged_partials
from pipeline.review.gapsim import Simulated
from pipeline.review.review import Review, pooled, review, scored, simulations
from pipeline.tiles.geo import lonlat_to_mercator, mercator_scale, mercator_to_lonlat
from pipeline.tiles.tilemath import Tile, tile_bounds, tile_ranges

if TYPE_CHECKING:
    import geopandas as gpd

#: how far (ground metres) around a block and its features the features it is compared with reach:
#: more than any pairing distance (``max_offset_m``), tolerance or placebo move (60 m) of the comparison
MARGIN_M = 100.0

Box = tuple[float, float, float, float]  # W, S, E, N degrees (EPSG:4326)


@dataclass(frozen=True)
class Inputs:
    """What a region is compared with (EPSG:4326 frames): predictions, the compared OSM features,
    the OSM ``context`` reaching in from outside and the ``low``-confidence predictions."""

    pred: gpd.GeoDataFrame
    osm: gpd.GeoDataFrame
    context: gpd.GeoDataFrame
    low: gpd.GeoDataFrame | None


class Source(Protocol):
    """Where a region's :class:`Inputs` come from."""

    def index(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``"pred"`` and ``"osm"`` (every OSM feature that may be compared): the class of each
        row and its bounds ((n, 4), EPSG:4326; rounded outward at most)."""
        ...

    def read(self, boxes: dict[str, Box]) -> Inputs:
        """The rows of each class (``boxes``: class -> box) whose bounds meet its box, in their order."""
        ...

    def everything(self) -> Inputs:
        """All of it."""
        ...


@dataclass(frozen=True)
class InMemory:
    """A :class:`Source` over frames already read."""

    inputs: Inputs
    _bounds: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def _frames(self) -> dict[str, Any]:
        i = self.inputs
        return {k: df for k, df in (("pred", i.pred), ("osm", i.osm), ("context", i.context), ("low", i.low))
                if df is not None}

    def _of(self, k: str, df: Any) -> np.ndarray:
        if k not in self._bounds:
            self._bounds[k] = shapely.bounds(df.geometry.to_numpy()).reshape(-1, 4)
        return self._bounds[k]

    def index(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        f = self._frames()
        return {k: (_classes(f[k]), self._of(k, f[k])) for k in ("pred", "osm")}

    def read(self, boxes: dict[str, Box]) -> Inputs:
        out = {}
        for k, df in self._frames().items():
            cls, b = _classes(df), self._of(k, df)
            keep = np.zeros(len(df), dtype=bool)
            for name, (w, s, e, n) in boxes.items():
                keep |= (cls == name) & (b[:, 0] <= e) & (b[:, 2] >= w) & (b[:, 1] <= n) & (b[:, 3] >= s)
            out[k] = df[keep].reset_index(drop=True)
        return Inputs(out["pred"], out["osm"], out["context"], out.get("low"))

    def everything(self) -> Inputs:
        return self.inputs


def _classes(df: Any) -> np.ndarray:
    return df["class"].to_numpy().astype(str) if len(df) and "class" in df.columns else np.empty(len(df), dtype=str)


def block_zoom(zoom: int, block_tiles: int) -> int:
    """The zoom of the blocks: ``block_tiles`` (a power of two) tiles at ``zoom`` a side (at most
    the whole world: zoom 0)."""
    return max(0, zoom - int(math.log2(block_tiles)))


def centre_keys(bounds_4326: np.ndarray, bz: int) -> np.ndarray:
    """The block (``x * 2**bz + y`` of a tile at zoom ``bz``) of the centre of each of ``bounds_4326``."""
    b = np.asarray(bounds_4326, dtype=float).reshape(-1, 4)
    xy = lonlat_to_mercator(np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2]))
    tx, _, ty, _ = tile_ranges(np.column_stack([xy, xy]), bz)  # (a point's tile)
    return tx * (1 << bz) + ty


def block_keys(geoms_4326: np.ndarray, bz: int) -> np.ndarray:
    """The block of each geometry (EPSG:4326): that of the centre of its bounds."""
    g = np.asarray(geoms_4326, dtype=object)
    return centre_keys(shapely.bounds(g), bz) if len(g) else np.empty(0, dtype=np.int64)


def compare_region(source: Source | Inputs, classes: tuple[ClassSpec, ...], spec: CompareSpec,
                   evidence: Evidence | None, resolvable_m2: float, held_out: set[tuple[int, int]],
                   zoom: int) -> tuple[Comparison, Review]:
    """The region's comparison and review queue (:func:`pipeline.review.compare.compare`,
    :func:`pipeline.review.review.review`), block by block when it spans more than one block."""
    src: Source = InMemory(source) if isinstance(source, Inputs) else source
    blocks, bz = np.empty(0, dtype=np.int64), 0
    if spec.block_tiles:
        index = src.index()
        bz = block_zoom(zoom, spec.block_tiles)
        blocks = np.union1d(_reached(index["pred"][1], bz), _reached(index["osm"][1], bz))
    if len(blocks) <= 1:
        i = src.everything()
        cmp = compare(i.pred, i.osm, classes, spec, evidence, resolvable_m2, i.low, i.context)
        cmp.summary["blocks"] = 1
        surround = pd.concat([i.osm, i.context], ignore_index=True)
        return cmp, review(cmp, i.pred, surround, classes, spec, held_out, zoom, evidence)
    owners = {k: centre_keys(b, bz) for k, (_, b) in index.items()}  # (once: every block reads them)
    job = _Block(src, classes, spec, evidence, resolvable_m2, frozenset(held_out), zoom, index, owners, bz,
                 _scale(index))
    return _in_blocks(job, blocks.tolist())


def _scale(index: dict[str, tuple[np.ndarray, np.ndarray]]) -> float:
    """Mercator metres per ground metre (1 / cos(latitude)) at the median latitude of the OSM
    features (or predictions)."""
    b = index["osm"][1] if len(index["osm"][1]) else index["pred"][1]
    lat = float(np.median((b[:, 1] + b[:, 3]) / 2)) if len(b) else 0.0
    return 1.0 / math.cos(math.radians(lat))


def _in_blocks(job: _Block, blocks: list[int]) -> tuple[Comparison, Review]:
    """:func:`compare_region` block by block, in ``[compare] processes`` processes; the blocks'
    results taken in block order."""
    layers: dict[str, list[gpd.GeoDataFrame]] = {}
    parts, pools = [], []
    for done in _map(job, blocks, job.spec.processes):
        pools.append(done.pools)
        parts.append(done.partials)
        for status, layer in done.layers.items():
            layers.setdefault(status, []).append(layer)
    partials = merged_partials(parts)
    merged = {s: _concat(ls) for s, ls in layers.items()}
    cmp = Comparison(merged, summary_of(partials, merged, job.classes, job.spec, job.resolvable_m2), None, partials)
    cmp.summary["blocks"] = len(blocks)
    return cmp, scored(merged, pooled(pools), job.classes, job.spec, set(job.held_out), job.zoom, partials)


@dataclass(frozen=True)
class _Done:
    """One block's change layers, additive figures and labelled pools."""

    layers: dict[str, gpd.GeoDataFrame]
    partials: dict[str, dict[str, float]]
    pools: dict[str, Simulated | None]


@dataclass(frozen=True)
class _Block:
    """Everything a block's comparison needs but the block: called with a block, it reads and compares it."""

    src: Source
    classes: tuple[ClassSpec, ...]
    spec: CompareSpec
    evidence: Evidence | None
    resolvable_m2: float
    held_out: frozenset[tuple[int, int]]
    zoom: int
    index: dict[str, tuple[np.ndarray, np.ndarray]]
    owners: dict[str, np.ndarray]  # the block of each row of ``index`` (:func:`centre_keys`)
    bz: int
    scale: float

    def __call__(self, b: int) -> _Done:
        with region_scale(self.scale):
            local = _block_inputs(self.src, self.index, self.owners, b, self.bz)
            cmp = compare(local.pred, local.osm, self.classes, self.spec, self.evidence, self.resolvable_m2,
                          local.low, local.context, own=_owner(b, self.bz))
            d = self.zoom - self.bz
            mine = {(x, y) for x, y in self.held_out if (x >> d) * (1 << self.bz) + (y >> d) == b}
            pools = simulations(cmp, local.pred, pd.concat([local.osm, local.context], ignore_index=True),
                                self.classes, self.spec, mine, self.zoom, self.evidence)
        return _Done(cmp.layers, cmp.partials, pools)


_JOB: list[_Block] = []  # the job of a block process (set before it forks: never pickled)


def _run(b: int) -> _Done:
    return _JOB[0](b)


def _map(job: _Block, blocks: list[int], processes: int) -> Iterator[_Done]:
    """``job`` of every block, in order: in this process, or in ``processes`` forked ones (where
    the platform forks; the job, its source and evidence are inherited, the results pickled back)."""
    import multiprocessing

    if processes <= 1 or len(blocks) < 2 or "fork" not in multiprocessing.get_all_start_methods():
        yield from (job(b) for b in blocks)
        return
    from concurrent.futures import ProcessPoolExecutor

    _JOB[:] = [job]
    try:
        with ProcessPoolExecutor(min(processes, len(blocks)), mp_context=multiprocessing.get_context("fork")) as pool:
            yield from pool.map(_run, blocks)
    finally:
        _JOB.clear()


def _reached(bounds_4326: np.ndarray, bz: int) -> np.ndarray:
    """The blocks (keys as :func:`centre_keys`) any of ``bounds_4326`` reach."""
    b = np.asarray(bounds_4326, dtype=float).reshape(-1, 4)
    b = b[np.isfinite(b).all(axis=1)]
    if not len(b):
        return np.empty(0, dtype=np.int64)
    n = 1 << bz
    tx0, tx1, ty0, ty1 = tile_ranges(np.column_stack([lonlat_to_mercator(b[:, [0, 1]]),
                                                      lonlat_to_mercator(b[:, [2, 3]])]), bz)
    out: set[int] = set()
    for a, c, d, f in set(zip(tx0.tolist(), tx1.tolist(), ty0.tolist(), ty1.tolist())):
        out.update(x * n + y for x in range(a, c + 1) for y in range(d, f + 1))
    return np.array(sorted(out), dtype=np.int64)


def _owner(b: int, bz: int) -> Callable[[np.ndarray], np.ndarray]:
    return lambda g: block_keys(g, bz) == b


def _concat(layers: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    import geopandas as gpd

    full = [x for x in layers if len(x)]
    if not full:
        return layers[0]
    return ranked_rows(gpd.GeoDataFrame(pd.concat(full, ignore_index=True), geometry="geometry", crs="EPSG:4326"))


def _block_box(b: int, bz: int) -> tuple[Box, float]:
    """Block ``b`` grown by :data:`MARGIN_M` (EPSG:4326) and that margin in degrees (at least)."""
    x, y = divmod(int(b), 1 << bz)
    mx = tile_bounds(Tile(bz, x, y))
    grow = MARGIN_M * float(mercator_scale(max(abs(mx[1]), abs(mx[3]))))
    (w, s), (east, n) = mercator_to_lonlat(np.array([[mx[0] - grow, mx[1] - grow], [mx[2] + grow, mx[3] + grow]]))
    lat = max(abs(float(s)), abs(float(n)))
    reach = MARGIN_M / 110_574.0 / math.cos(math.radians(min(lat, 89.0)))
    return (float(w), float(s), float(east), float(n)), reach


def _block_inputs(src: Source, index: dict[str, tuple[np.ndarray, np.ndarray]], owners: dict[str, np.ndarray],
                  b: int, bz: int) -> Inputs:
    """What block ``b`` is compared with (see the module doc), read from ``src`` (``owners``: the
    block of each row of ``index``)."""
    area, reach = _block_box(b, bz)
    boxes: dict[str, list[float]] = {}
    for k in ("pred", "osm"):  # each class's box: the block's, grown over the features it owns
        mine = owners[k] == b
        cls, bounds = index[k][0][mine], index[k][1][mine]
        for name in np.unique(cls).tolist():
            own = bounds[cls == name]
            box = boxes.setdefault(name, list(area))
            box[:] = [min(box[0], own[:, 0].min() - reach), min(box[1], own[:, 1].min() - reach),
                      max(box[2], own[:, 2].max() + reach), max(box[3], own[:, 3].max() + reach)]
    names = set(np.concatenate([index["pred"][0], index["osm"][0]]).tolist())
    read = src.read({name: tuple(boxes.get(name, area)) for name in sorted(names)})  # type: ignore[misc]
    return _near(read, b, bz, area, reach)


def _near(read: Inputs, b: int, bz: int, area: Box, reach: float) -> Inputs:
    """Of ``read``, the rows that meet the block's ``area`` or lie within ``reach`` (degrees) of a
    row of their class the block owns."""
    frames = {"pred": read.pred, "osm": read.osm, "context": read.context, "low": read.low}
    frames = {k: df for k, df in frames.items() if df is not None}
    box = shapely.box(*area)
    w, s, e, n = area
    owned = {}
    for k in ("pred", "osm"):  # owned rows reaching out of the area (the rest: all near rows meet the area)
        g = frames[k].geometry.to_numpy()
        gb = shapely.bounds(g).reshape(-1, 4)
        out_of = (gb[:, 0] < w + reach) | (gb[:, 1] < s + reach) | (gb[:, 2] > e - reach) | (gb[:, 3] > n - reach)
        owned[k] = frames[k][out_of & (block_keys(g, bz) == b)]
    out: dict[str, Any] = {}
    for k, df in frames.items():
        if not len(df):
            out[k] = df
            continue
        g, cls = df.geometry.to_numpy(), _classes(df)
        tree = shapely.STRtree(g)
        rows = set(tree.query(box, predicate="intersects").tolist())
        for mine in owned.values():
            mcls = _classes(mine)
            for name in np.unique(mcls).tolist():
                near = tree.query(mine.geometry.to_numpy()[mcls == name], predicate="dwithin", distance=reach)[1]
                rows.update(near[cls[near] == name].tolist())
        out[k] = df.iloc[np.array(sorted(rows), dtype=np.int64)].reset_index(drop=True)
    return Inputs(out["pred"], out["osm"], out["context"], out.get("low"))
