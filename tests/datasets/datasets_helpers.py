"""Helpers for the edgenas.datasets tests: small generated layouts (imported by the tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]


def write_tone(path: Path, rate: int = 16000, seconds: float = 0.25, freq: float = 440.0, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(path, x, rate, subtype="PCM_16")
    return path


def build_speech_commands(
    root: Path,
    words: list[str],
    speakers: list[str],
    *,
    per_speaker: int = 1,
    val_speakers: tuple[str, ...] = (),
    test_speakers: tuple[str, ...] = (),
    testing_list: bool = True,
    background: bool = True,
    rate: int = 16000,
    seconds: float = 0.3,
) -> Path:
    """A Speech Commands-style folder with lists built from speaker ids."""
    val, test = [], []
    for wi, w in enumerate(words):
        for si, s in enumerate(speakers):
            for n in range(per_speaker):
                rel = f"{w}/{s}_nohash_{n}.wav"
                write_tone(root / rel, rate, seconds, 200 + 40 * wi + 5 * si)
                if s in val_speakers:
                    val.append(rel)
                elif s in test_speakers:
                    test.append(rel)
    (root / "validation_list.txt").write_text("".join(f"{r}\n" for r in val))
    if testing_list:
        (root / "testing_list.txt").write_text("".join(f"{r}\n" for r in test))
    if background:
        bg = root / "_background_noise_"
        bg.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for name in ("white.wav", "other.wav"):
            sf.write(bg / name, 0.1 * rng.standard_normal(rate * 3), rate, subtype="PCM_16")
    return root


def build_fsdd(root: Path, speakers: list[str], indices: range = range(6), rate: int = 8000) -> Path:
    for s in speakers:
        for d in range(10):
            for i in indices:
                write_tone(root / "recordings" / f"{d}_{s}_{i}.wav", rate, 0.1, 300 + 30 * d)
    return root


def tar_gz(members: dict[str, bytes]) -> bytes:
    """A .tar.gz archive of ``members`` (name → bytes), built in memory."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
