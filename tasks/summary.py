"""``python -m tasks.summary --config configs/<region>.toml``: where a region's outputs are and
its headline figures (test IoU per class; for the sample region, precision and recall of the
missing-in-OSM candidates against its truth; time per stage). ``make demo`` ends with it."""

from __future__ import annotations

import sys

from pipeline.config.region import load_config
from pipeline.core.errors import OsmsatError
from pipeline.review.region_report import summary_lines


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--config":
        print("usage: python -m tasks.summary --config configs/<region>.toml", file=sys.stderr)
        return 2
    try:
        cfg = load_config(argv[1])
    except OsmsatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(summary_lines(cfg.data_dir, cfg.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
