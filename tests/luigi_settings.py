"""Set operational Luigi settings (configs/luigi.toml sections) for the duration of a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import luigi.configuration


@contextmanager
def luigi_settings(section: str, **values: Any) -> Iterator[None]:
    """``[section] key = value`` in Luigi's loaded config, restored afterwards."""
    config = luigi.configuration.get_config()
    missing = object()
    old = {k: config.get(section, k, missing) for k in values}
    for k, v in values.items():
        config.set(section, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is missing:
                config.data[section].pop(k, None)  # type: ignore[attr-defined]
            else:
                config.set(section, k, v)
