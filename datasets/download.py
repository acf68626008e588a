"""Download public datasets into the cache (never called implicitly; nothing at run time needs it).

The archive is streamed to ``<name>.tar.gz.part``, checked against its SHA-256, renamed, then
extracted into a temporary folder (members that would escape it are rejected) which is renamed
to ``<cache_dir>/<name>/``; a ``.complete`` marker makes a second call a no-op.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from edgenas.datasets.base import default_cache_dir
from edgenas.errors import DataError
from edgenas.events import EventSink, progress

SPEECH_COMMANDS_URLS = {
    1: "http://download.tensorflow.org/data/speech_commands_v0.01.tar.gz",
    2: "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
}
# The archives' SHA-256 as published with torchaudio's SPEECHCOMMANDS dataset.
SPEECH_COMMANDS_SHA256 = {
    1: "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d",
    2: "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58",
}
DEFAULT_URL = SPEECH_COMMANDS_URLS[2]
KNOWN_SHA256 = SPEECH_COMMANDS_SHA256[2]
COMPLETE = ".complete"
CHUNK = 1 << 20


def _fetch(url: str, dest: Path, sha256: str | None, sink: EventSink | None, timeout: float) -> None:
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            with part.open("wb") as f, progress(sink, f"download {dest.name}", int(total) if total else None) as tick:
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    f.write(block)
                    digest.update(block)
                    tick(len(block))
    except (urllib.error.URLError, OSError, ValueError) as e:
        part.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise DataError(f"cannot download {url}: {reason}") from None
    if sha256 and digest.hexdigest() != sha256.lower():
        part.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {digest.hexdigest()}")
    os.replace(part, dest)


def _safe_extract(archive: Path, dest: Path) -> None:
    dest_abs = dest.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for m in tar.getmembers():
                target = (dest_abs / m.name).resolve()
                if target != dest_abs and dest_abs not in target.parents:
                    raise DataError(f"refusing to extract {archive}: member {m.name!r} escapes the target folder")
                if m.issym() or m.islnk():
                    link = (target.parent / m.linkname).resolve()
                    if dest_abs not in link.parents:
                        raise DataError(f"refusing to extract {archive}: link {m.name!r} points outside the target folder")
                if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
                    raise DataError(f"refusing to extract {archive}: member {m.name!r} is not a regular file or folder")
            tar.extractall(dest_abs, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot extract {archive}: {e}") from None


def download_archive(
    url: str,
    name: str,
    *,
    sha256: str | None,
    cache_dir: str | Path | None = None,
    sink: EventSink | None = None,
    timeout: float = 60.0,
    keep_archive: bool = False,
) -> Path:
    """Download and extract a .tar(.gz) archive into ``<cache_dir>/<name>/`` (idempotent)."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / name
    if (target / COMPLETE).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    archive = cache / f"{name}.tar.gz"
    if not archive.is_file():
        _fetch(url, archive, sha256, sink, timeout)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=cache))
    try:
        _safe_extract(archive, tmp)
        (tmp / COMPLETE).write_text(f"{url}\nsha256 {sha256 or 'unchecked'}\n")
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier extraction
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if not keep_archive:
        archive.unlink(missing_ok=True)
    return target


def download_speech_commands(
    version: int = 2,
    cache_dir: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    sink: EventSink | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch Google Speech Commands v0.0<version> into ``<cache_dir>/speech_commands_v0.0<version>/``.

    ``url``/``sha256`` default to the official archive and its known checksum (a custom
    ``url`` without ``sha256`` is not verified). Returns the extracted folder; a second call
    is a no-op.
    """
    if version not in SPEECH_COMMANDS_URLS:
        raise DataError(f"unknown Speech Commands version {version} (known: 1, 2)")
    if url is None:
        url = SPEECH_COMMANDS_URLS[version]
        sha256 = sha256 or SPEECH_COMMANDS_SHA256[version]
    return download_archive(
        url, f"speech_commands_v0.0{version}", sha256=sha256, cache_dir=cache_dir, sink=sink, timeout=timeout
    )
