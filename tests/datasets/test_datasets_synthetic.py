from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgenas.datasets import ensure_synthetic_kws, open_dataset
from edgenas.datasets import synthetic as synth
from edgenas.datasets.speech_commands import CLASSES_12


def _tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


TINY = dict(n_speakers=6, clips_per_word=1)


def test_tiny_generation_is_deterministic(tmp_path: Path) -> None:
    a = ensure_synthetic_kws(tmp_path / "a", seed=0, **TINY)
    b = ensure_synthetic_kws(tmp_path / "b", seed=0, **TINY)
    assert _tree_hash(a) == _tree_hash(b)
    assert "SYNTHETIC" in (a / "SYNTHETIC.md").read_text()
    n_wavs = len([p for p in a.rglob("*.wav") if p.parent.name != "_background_noise_"])
    assert n_wavs == 6 * (10 * 1 + len(synth.UNKNOWN_WORDS))
    assert len(list((a / "_background_noise_").glob("*.wav"))) >= 2
    mtime = (a / ".complete").stat().st_mtime
    assert ensure_synthetic_kws(tmp_path / "a", seed=0, **TINY) == a  # reused, not regenerated
    assert (a / ".complete").stat().st_mtime == mtime
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temp folders left
    c = ensure_synthetic_kws(tmp_path / "c", seed=1, **TINY)
    assert _tree_hash(c) != _tree_hash(a)


def test_tiny_dataset_loads_speaker_disjoint(tmp_path: Path) -> None:
    root = ensure_synthetic_kws(tmp_path, **TINY)
    ds = open_dataset(root)
    assert ds.synthetic and ds.name == "synthetic_kws" and ds.classes == CLASSES_12 and ds.native_rate == 16000
    assert all(ds.splits[s] for s in ("train", "val", "test"))
    assert not ds.speakers("train") & ds.speakers("val")
    assert not ds.speakers("train") & ds.speakers("test")
    voices = {s["id"]: s["voice"] for s in json.loads((root / "speakers.json").read_text())}
    train_voices = {voices[s] for s in ds.speakers("train")}
    assert not train_voices & {voices[s] for s in ds.speakers("val") | ds.speakers("test")}
    assert len(ds.background) == 3 and any(c.label == 0 for c in ds.splits["train"])


def test_open_dataset_none_uses_synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = synth.ensure_synthetic_kws
    calls: list[Path | None] = []

    def tiny(cache_dir=None, seed=0, sink=None, **kw):  # type: ignore[no-untyped-def]
        calls.append(cache_dir)
        return real(cache_dir, seed=seed, sink=sink, **TINY)

    monkeypatch.setattr(synth, "ensure_synthetic_kws", tiny)
    ds = open_dataset(None, cache_dir=tmp_path)
    assert ds.synthetic and calls == [tmp_path] and ds.root.startswith(str(tmp_path))
