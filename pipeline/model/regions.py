"""Several regions, one model: ``[train] regions`` names other region configs whose train and
validation tiles join this region's training and validation (their test tiles stay theirs, and
the model's test split is this region's own). And models named by their region:
``[predict] model`` and ``[train] init`` may name a region config (``configs/<region>.toml``)
instead of a checkpoint: that region's ``model/best.pt``, trained first when it is not there
(Luigi requires its ``TrainModel``; the digest chains to that region's ``train`` digest).
:func:`model_path` is the checkpoint a region is predicted with, :func:`check_environment` what a
run checks before it starts (the other regions a config names, and the environment variables).

Each region keeps its own split (``split.csv``, made by its own ``SplitDataset``); its rows are
read with absolute file paths so one dataset holds every region's tiles. Band statistics are
pooled over the regions' training pixels: with ``n_i`` training tiles of region ``i`` (all of one
tile size), mean ``m = sum(n_i m_i) / N`` and variance ``sum(n_i (s_i^2 + m_i^2)) / N - m^2``
per band, in the shared units of pixel / ``max``. The regions must agree on the class table
(names and ids, edge outputs), the band count, the tile size and the bit depth (``max``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.config.region import RegionConfig, load_config
from pipeline.core.errors import ConfigError

if TYPE_CHECKING:  # pipeline.model.split imports numpy: digests (which read this module) must not
    from pipeline.model.split import TileRow


@dataclass(frozen=True)
class RegionTiles:
    """One region's share of a training run: its name, its rows (absolute paths) and split stats."""

    name: str
    rows: tuple[TileRow, ...]
    stats: dict[str, Any]


def is_region_ref(path: Path | None) -> bool:
    """Whether a model setting names a region config (``*.toml``) rather than a checkpoint."""
    return path is not None and path.suffix.lower() == ".toml"


def region_model(path: Path, where: str) -> Path:
    """The checkpoint a model setting means: a region config's ``model/best.pt``, or the path as
    given; ``where`` (``"[predict] model"``) names the key when the config cannot be read."""
    if not is_region_ref(path):
        return path
    try:
        return load_config(path).data_dir / "model" / "best.pt"
    except ConfigError as exc:
        raise ConfigError(f"{where} = '{path}' names a region config that cannot be used: {exc}") from exc


def model_path(cfg: RegionConfig) -> Path:
    """The checkpoint that predicts region ``cfg``: ``[predict] model`` (a checkpoint, or a region
    config: that region's ``model/best.pt``), or the region's own ``data/<region>/model/best.pt``."""
    own = Path(cfg.data_dir) / "model" / "best.pt"
    if cfg.predict.model is None:
        return own
    return region_model(cfg.predict.model, "[predict] model")


def is_own_model(cfg: RegionConfig) -> bool:
    """True when the region is predicted with the model trained on it (``model/best.pt``)."""
    own = Path(cfg.data_dir) / "model" / "best.pt"
    return model_path(cfg).resolve() == own.resolve()


def cross_fit_model(cfg: RegionConfig) -> Path | None:
    """``model/cross/best.pt`` when the region predicts with its own model and ``[train] cross_fit``
    is on (it predicts the training tiles); None otherwise."""
    if not is_own_model(cfg) or not cfg.train.cross_fit:
        return None
    return Path(cfg.data_dir) / "model" / "cross" / "best.pt"


def training_tiles(cfg: RegionConfig) -> set[tuple[int, int, int]]:
    """The (z, x, y) tiles of the train split (``split.csv``; empty without one)."""
    from pipeline.model.split import read_split_csv

    path = Path(cfg.data_dir) / "split.csv"
    if not path.is_file():
        return set()
    return {(r.z, r.x, r.y) for r in read_split_csv(path) if r.split == "train"}


def region_refs(cfg: RegionConfig) -> list[tuple[str, Path]]:
    """``(key, config path)`` of every other region config ``cfg`` names: ``[train] regions``,
    ``[train] init`` and ``[predict] model`` when they name a config."""
    train, predict = cfg.train, cfg.predict
    out = [("[train] regions", p) for p in train.regions]
    out += [(key, p) for key, p in (("[train] init", train.init), ("[predict] model", predict.model))
            if p is not None and is_region_ref(p)]
    return out


def check_region_refs(cfg: RegionConfig, chain: tuple[Path, ...] = ()) -> None:
    """Every region config ``cfg`` names (and those they name) exists and loads, and none names
    back into the chain (Luigi would wait on itself): one line naming the config, key and file."""
    here = (*chain, cfg.path.resolve())
    for key, path in region_refs(cfg):
        if not path.is_file():
            alt = "" if key == "[train] regions" else " or of a checkpoint"
            raise ConfigError(f"{cfg.path}: {key} names '{path}', which is no file; give the path of a region "
                              f"config (configs/<region>.toml){alt}")
        if path.resolve() in here:
            raise ConfigError(f"{cfg.path}: {key} = '{path}' leads back to {path} (through "
                              f"{' -> '.join(str(p) for p in here)}); a region cannot wait on its own model")
        try:
            other = load_config(path)
        except ConfigError as exc:
            raise ConfigError(f"{cfg.path}: {key} = '{path}': {exc}") from exc
        check_region_refs(other, here)


def check_model_files(cfg: RegionConfig, stages: set[str] | None = None) -> None:
    """A checkpoint named by ``[train] init`` (when ``stages`` holds ``train``) or ``[predict]
    model`` (when it holds ``predict``) must exist: one line naming the config and key, before a
    run spends minutes on the stages before training. ``stages`` None: both are checked."""
    keys = (("train", "[train] init", cfg.train.init), ("predict", "[predict] model", cfg.predict.model))
    for stage, key, given in keys:
        if (stages is None or stage in stages) and given is not None and not is_region_ref(given) \
                and not given.is_file():
            raise ConfigError(f"{cfg.path}: {key} = '{given}': no such file; name a best.pt written by TrainModel "
                              "(data/<region>/model/best.pt, copied where you like) or a region config, "
                              "or remove the key")


def other_regions(cfg: RegionConfig) -> list[RegionConfig]:
    """The configs named by ``[train] regions``, loaded; a region naming itself, twice, or one
    whose class table differs is refused in one line naming both configs."""
    out: list[RegionConfig] = []
    own = _class_table(cfg)
    for path in cfg.train.regions:
        other = load_config(path)
        if other.data_dir.resolve() == cfg.data_dir.resolve() or any(
                o.data_dir.resolve() == other.data_dir.resolve() for o in out):
            raise ConfigError(f"{cfg.path}: [train] regions names {path}, whose data folder {other.data_dir} is "
                              "this region's or another listed one's; list each other region once")
        if _class_table(other) != own:
            raise ConfigError(f"{cfg.path}: [train] regions: {path} has classes {_class_table(other)}, this region "
                              f"{own}; regions trained together need the same class names, ids and edge outputs")
        out.append(other)
    return out


def _class_table(cfg: RegionConfig) -> tuple[Any, ...]:
    return (tuple(sorted((c.name, c.id) for c in cfg.classes)), tuple(cfg.edge_ids))


def absolute_rows(data_dir: Path, rows: Sequence[TileRow]) -> tuple[TileRow, ...]:
    """``rows`` of ``split.csv`` with their image and mask paths made absolute (``data_dir`` /)."""
    base = data_dir.resolve()
    return tuple(replace(r, image=str(base / r.image), mask=str(base / r.mask)) for r in rows)


def region_tiles(cfg: RegionConfig, stats: dict[str, Any]) -> RegionTiles:
    """A region's rows (absolute paths) and its split statistics (``split_stats.json``, given)."""
    from pipeline.model.split import read_split_csv

    return RegionTiles(cfg.name, absolute_rows(cfg.data_dir, read_split_csv(cfg.data_dir / "split.csv")), stats)


def pooled_stats(regions: Sequence[RegionTiles]) -> dict[str, Any]:
    """The regions' split statistics pooled over their training tiles (see the module
    docstring): ``bands``, ``tile_size`` and ``band_stats`` (``mean``, ``std``, ``max`` when the
    first has one). Raises ConfigError naming the regions when they do not agree."""
    first = regions[0]
    for r in regions[1:]:
        for key, what in (("bands", "bands"), ("tile_size", "tile size (px)")):
            if r.stats[key] != first.stats[key]:
                raise ConfigError(f"[train] regions: {r.name} has {r.stats[key]} {what}, {first.name} "
                                  f"{first.stats[key]}; regions trained together need the same {what}")
        if r.stats["band_stats"].get("max") != first.stats["band_stats"].get("max"):
            raise ConfigError(f"[train] regions: {r.name} and {first.name} have imagery of different bit depths "
                              f"(band max {r.stats['band_stats'].get('max')} and "
                              f"{first.stats['band_stats'].get('max')}); train them apart")
    weights = [sum(1 for row in r.rows if row.split == "train") for r in regions]
    total = sum(weights) or 1
    n = int(first.stats["bands"])
    mean = [sum(w * float(r.stats["band_stats"]["mean"][b]) for w, r in zip(weights, regions)) / total
            for b in range(n)]
    second = [sum(w * (float(r.stats["band_stats"]["std"][b]) ** 2 + float(r.stats["band_stats"]["mean"][b]) ** 2)
                  for w, r in zip(weights, regions)) / total for b in range(n)]
    band_stats: dict[str, Any] = {"mean": [round(m, 6) for m in mean],
                                  "std": [round(math.sqrt(max(s - m * m, 1e-12)), 6) for s, m in zip(second, mean)]}
    if "max" in first.stats["band_stats"]:
        band_stats["max"] = first.stats["band_stats"]["max"]
    return {**first.stats, "band_stats": band_stats, "regions": {r.name: w for r, w in zip(regions, weights)}}


def check_environment(cfg: RegionConfig) -> None:
    """Raise ConfigError when ``[imagery] url`` or ``headers`` use a ``${NAME}`` that is not set
    in the environment (checked before any tile is fetched, not tile by tile), or when a region
    config the region names (``[train] regions``, ``init``, ``[predict] model``) is missing,
    broken or leads back to this one (:func:`check_region_refs`)."""
    check_region_refs(cfg)
    if cfg.imagery is None:
        return
    texts = [("url", cfg.imagery.url or "")] + [(f"headers.{k}", v) for k, v in cfg.imagery.headers]
    for key, text in texts:
        for name in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text):
            if name not in os.environ:
                raise ConfigError(f"{cfg.path}: imagery.{key} uses ${{{name}}} but the environment variable is "
                                  f"not set; export {name}=... before running")
