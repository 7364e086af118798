"""Operational settings (``configs/luigi.toml``, section ``[osmsat]``), not region config."""

from __future__ import annotations

import luigi


class osmsat(luigi.Config):  # noqa: N801 - the section name in luigi.toml
    """``[osmsat]`` in luigi.toml."""

    node_index = luigi.Parameter(
        default="flex_mem",
        description="pyosmium node-location index: flex_mem (RAM) or sparse_file_array,<path> (disk)",
    )

