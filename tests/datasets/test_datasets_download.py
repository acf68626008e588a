from __future__ import annotations

import hashlib
import io
import socket
from pathlib import Path

import pytest

from edgenas.datasets import download_speech_commands, open_dataset
from edgenas.errors import DataError

from datasets_helpers import tar_gz


def _wav_bytes() -> bytes:
    import numpy as np
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, 0.1 * np.ones(1600), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_download_extract_and_reuse(server: tuple[str, Path], tmp_path: Path) -> None:
    base, www = server
    wav = _wav_bytes()
    members = {f"{w}/0000000{i}_nohash_0.wav": wav for w in ("yes", "no") for i in range(3)}
    members["validation_list.txt"] = b"yes/00000001_nohash_0.wav\nno/00000001_nohash_0.wav\n"
    members["testing_list.txt"] = b"yes/00000002_nohash_0.wav\nno/00000002_nohash_0.wav\n"
    archive = tar_gz(members)
    (www / "sc.tar.gz").write_bytes(archive)
    events: list[str] = []
    cache = tmp_path / "cache"
    out = download_speech_commands(
        2, cache, url=f"{base}/sc.tar.gz", sha256=hashlib.sha256(archive).hexdigest(),
        sink=lambda e, **f: events.append(e),
    )
    assert out == cache / "speech_commands_v0.02"
    assert (out / ".complete").is_file() and (out / "yes" / "00000000_nohash_0.wav").read_bytes() == wav
    assert "progress.start" in events and "progress.end" in events
    assert not list(cache.glob("*.part")) and not list(cache.glob("*.tar.gz"))
    ds = open_dataset(out, setup="all")
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [2, 2, 2]
    (www / "sc.tar.gz").unlink()  # a second call must not touch the network
    assert download_speech_commands(2, cache, url=f"{base}/sc.tar.gz", sha256="0" * 64) == out


def test_checksum_mismatch(server: tuple[str, Path], tmp_path: Path) -> None:
    base, www = server
    (www / "sc.tar.gz").write_bytes(tar_gz({"yes/a_nohash_0.wav": _wav_bytes()}))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="checksum mismatch"):
        download_speech_commands(1, cache, url=f"{base}/sc.tar.gz", sha256="0" * 64)
    assert list(cache.iterdir()) == []  # partial download removed, nothing extracted


def test_missing_file_on_server(server: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = server
    with pytest.raises(DataError, match="cannot download"):
        download_speech_commands(2, tmp_path / "cache", url=f"{base}/absent.tar.gz", sha256="0" * 64)


def test_unreachable_server(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match="cannot download") as e:
        download_speech_commands(2, tmp_path / "cache", url=f"http://127.0.0.1:{port}/x.tar.gz", sha256="0" * 64, timeout=5)
    assert "\n" not in str(e.value)


def test_rejects_escaping_members(server: tuple[str, Path], tmp_path: Path) -> None:
    base, www = server
    archive = tar_gz({"../evil.txt": b"x"})
    (www / "evil.tar.gz").write_bytes(archive)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="escapes"):
        download_speech_commands(2, cache, url=f"{base}/evil.tar.gz", sha256=hashlib.sha256(archive).hexdigest())
    assert not (tmp_path / "evil.txt").exists() and not (cache / "speech_commands_v0.02").exists()
