"""``python -m tasks``: a failed run ends with ONE clear line ``error: <file/key/tile>: <what> —
<how to fix>`` and a non-zero exit; tracebacks go to ``<data_dir>/logs`` (or the terminal with
``--debug``). Cases: a corrupt PBF, a full disk (a small tmpfs), a raster outside the region, a
``data_dir`` that is a file."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.tileserver import write_test_geotiff
from tests.town import write_town_config


def cli(*args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSMSAT_")}
    proc = subprocess.run([sys.executable, "-m", "tasks", *args], check=False, cwd=ROOT, env=env, capture_output=True,
                          text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


def test_corrupt_pbf(tmp_path: Path) -> None:
    bad = tmp_path / "bad.osm.pbf"
    bad.write_bytes(random.Random(1).randbytes(3000))
    cfg = write_town_config(tmp_path / "r.toml", bad, tmp_path / "data")
    code, out, err = cli("MasksAll", "--config", str(cfg), "--workers", "2")
    assert code != 0
    assert last_line(err).startswith(f"error: {bad}: truncated, corrupt or not an OSM file")
    assert f"delete {bad} and rerun" in last_line(err)
    assert "Traceback" not in out + err and "Luigi Execution Summary" not in out + err
    logs = list((tmp_path / "data" / "logs").glob("MasksAll-*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text()  # the details are in the log
    # --debug: Luigi's own log with the traceback on the terminal, the clear line still last
    code, out, err = cli("MasksAll", "--config", str(cfg), "--debug")
    assert code != 0 and "Traceback" in err and last_line(err).startswith(f"error: {bad}: ")


def test_raster_outside_the_region(tmp_path: Path, town_pbf: Path) -> None:
    tif = write_test_geotiff(tmp_path / "far.tif", size_px=200)  # near Helsinki; the town is elsewhere
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, tmp_path / "data",
                            extra=f'\n[imagery]\nsource = "raster"\npaths = ["{tif}"]\n')
    code, _, err = cli("ImageryAll", "--config", str(cfg))
    assert code != 0
    assert last_line(err).startswith(f"error: {cfg}: [imagery] paths: no raster overlaps the region's ")
    assert "check region.bbox" in last_line(err) and "Traceback" not in err
    assert not list((tmp_path / "data").glob("images/**/*.png"))


def test_data_dir_that_is_a_file(tmp_path: Path, town_pbf: Path) -> None:
    afile = tmp_path / "notadir"
    afile.write_text("x")
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, afile)
    code, _, err = cli("MasksAll", "--config", str(cfg))
    assert code != 0 and last_line(err) == (f"error: {afile}: a file stands where a folder must go (Not a directory) "
                                            "— remove or rename that file (or change region.data_dir) and rerun")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs (needs root and mount; skipped otherwise)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=False,
                         capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk(small_disk: Path, tmp_path: Path, town_pbf: Path) -> None:
    cfg = write_town_config(tmp_path / "r.toml", town_pbf, small_disk / "data")
    code, out, err = cli("MasksAll", "--config", str(cfg), "--workers", "2")
    assert code != 0
    assert last_line(err).startswith(f"error: {small_disk / 'data'}")
    assert "no space left on the disk" in last_line(err) and "region.data_dir" in last_line(err)
    assert "Traceback" not in out + err and "Logging error" not in err
