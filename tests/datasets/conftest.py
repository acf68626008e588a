"""Fixtures for the edgenas.datasets tests."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import Callable, Iterator

import pytest

from datasets_helpers import KEYWORDS, SHARED_DATA, build_speech_commands, write_tone


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch ~/.cache in tests."""
    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path / "edgenas-cache"))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def make_wav() -> Callable[..., Path]:
    return write_tone


@pytest.fixture
def sc_layout(tmp_path: Path) -> Path:
    speakers = [f"{i:08x}" for i in range(6)]
    return build_speech_commands(
        tmp_path / "sc",
        KEYWORDS + ["bed", "cat", "dog"],
        speakers,
        val_speakers=(speakers[4],),
        test_speakers=(speakers[5],),
    )


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """A static file server that does not log every request to stderr."""

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local HTTP server for download tests: (base URL, the folder it serves)."""
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    finally:
        httpd.shutdown()
        httpd.server_close()
