"""Screenshot of a region's report page in headless Chromium (Selenium, Debian's chromium-driver).

    python scripts/report_screenshot.py data/demo/report.html docs/report.png

Waits until the imagery tiles are drawn, then saves a PNG of the whole page (1280 px wide).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.browser import chromium


def main(page: Path, out: Path) -> None:
    with chromium(1280, 1500) as drv:
        drv.get(page.resolve().as_uri())
        deadline = time.time() + 30
        while time.time() < deadline and not drv.execute_script(
                "return document.querySelectorAll('img.leaflet-tile-loaded').length"):
            time.sleep(0.3)
        time.sleep(1.0)
        height = drv.execute_script("return document.body.scrollHeight")
        drv.set_window_size(1280, min(int(height) + 40, 2400))
        time.sleep(0.5)
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        if errors:
            print(f"console errors: {errors}", file=sys.stderr)
        drv.save_screenshot(str(out))
    print(f"{out}: {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
