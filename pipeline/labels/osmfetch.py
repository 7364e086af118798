"""Download an OSM extract (``[osm] url``) safely: nothing reaches ``[osm] path`` unverified.

The body is streamed to a temporary file beside the destination and checked before the rename:
the HTTP status, a ``Content-Length`` honoured to the byte (urllib3 raises on a cut-short body),
not an HTML page, the PBF itself (the header and every block decode, through libosmium) and,
when the config gives ``[osm] sha256``, its checksum. A sidecar ``<path>.download.json`` records
the URL, size and sha256 of a verified download, so a file that later changes size is fetched
again, while a file the user put there by hand is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.atomic import atomic_path, atomic_write_json
from pipeline.core.errors import InputDataError
from pipeline.imagery.common import redact

_CHUNK = 1 << 20


@dataclass(frozen=True)
class DownloadRecord:
    """What a verified download wrote: the source URL, size in bytes, sha256 (hex)."""

    url: str
    size: int
    sha256: str


def sidecar(dest: Path) -> Path:
    """``<path>.download.json`` beside a downloaded extract."""
    return dest.with_name(dest.name + ".download.json")


def read_sidecar(dest: Path) -> DownloadRecord | None:
    """The record of an earlier verified download of ``dest``, or None (none, or unreadable)."""
    try:
        d = json.loads(sidecar(dest).read_text())
        return DownloadRecord(str(d["url"]), int(d["size"]), str(d["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def downloaded_intact(dest: Path) -> bool:
    """True when ``dest`` exists and, if it came from a download, still has the size recorded."""
    if not dest.is_file():
        return False
    rec = read_sidecar(dest)
    return rec is None or rec.size == dest.stat().st_size


def verify_pbf(path: Path, what: str = "") -> None:
    """Raise InputDataError unless ``path`` is an OSM PBF whose header and every block decode
    (libosmium reads the whole file, in C++ threads; objects are not built)."""
    what = what or str(path)
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.lstrip()[:1] == b"<":
        kind = "an HTML page" if b"html" in head.lower() else "XML/HTML text"
        raise InputDataError(f"{what}: is {kind}, not an OSM PBF")
    import osmium  # here, not at import: completeness checks read the sidecar only

    try:
        reader = osmium.io.Reader(osmium.io.File(str(path), "pbf"))
        osmium.apply(reader)  # no handler: every block is read and decoded, nothing is built
    except RuntimeError as exc:  # libosmium's io/pbf errors
        raise InputDataError(f"{what}: not a valid OSM PBF ({exc})") from exc


def download_extract(url: str, dest: Path, sha256: str | None = None, timeout_s: float = 60.0,
                     user_agent: str = "osmsat") -> DownloadRecord:
    """Download ``url`` to ``dest`` (atomically, verified as above); returns what was written.

    Raises InputDataError naming the URL (query values and userinfo redacted) and what was
    wrong; ``dest`` is then left untouched."""
    try:
        return _download(url, dest, sha256, timeout_s, user_agent)
    except InputDataError as exc:
        raise InputDataError(redact(str(exc))) from exc.__cause__


def _download(url: str, dest: Path, sha256: str | None, timeout_s: float, user_agent: str) -> DownloadRecord:
    import urllib3
    from urllib3.exceptions import HTTPError as Urllib3Error

    http = urllib3.PoolManager(headers={"User-Agent": user_agent})
    h = hashlib.sha256()
    size = 0
    with atomic_path(dest) as tmp:
        try:
            resp = http.request("GET", url, preload_content=False, timeout=urllib3.Timeout(timeout_s, timeout_s),
                                retries=urllib3.Retry(total=3, backoff_factor=1.0,
                                                      status_forcelist=(429, 500, 502, 503, 504)))
        except Urllib3Error as exc:
            raise InputDataError(f"{url}: download failed ({exc})") from exc
        try:
            if resp.status != 200:
                raise InputDataError(f"{url}: HTTP {resp.status} ({resp.data[:120]!r})")
            ctype = (resp.headers.get("Content-Type") or "").lower()
            if ctype.startswith("text/"):
                raise InputDataError(f"{url}: the server sent {ctype}, not an OSM PBF (an error page?)")
            with open(tmp, "wb") as fh:
                for chunk in resp.stream(_CHUNK):
                    fh.write(chunk)
                    h.update(chunk)
                    size += len(chunk)
        except Urllib3Error as exc:  # a cut-short body (Content-Length not reached), a reset
            got = resp.tell()  # bytes off the wire, the failed read's included (``size`` misses its part)
            expected = resp.headers.get("Content-Length")
            of = f" of {expected} bytes (Content-Length)" if expected and expected.isdigit() else " bytes"
            raise InputDataError(f"{url}: download cut short: got {got}{of}; the server or the network "
                                 f"dropped the connection ({type(exc).__name__})") from exc
        finally:
            resp.release_conn()
        expected = resp.headers.get("Content-Length")
        if expected is not None and expected.isdigit() and int(expected) != size:
            raise InputDataError(f"{url}: got {size} bytes, Content-Length says {expected}")
        digest = h.hexdigest()
        if sha256 and digest != sha256.lower():
            raise InputDataError(f"{url}: sha256 is {digest}, [osm] sha256 says {sha256}")
        verify_pbf(tmp, f"{url} (downloaded)")
    record = DownloadRecord(url, size, digest)
    atomic_write_json(sidecar(dest), {"url": url, "size": size, "sha256": digest})
    return record
