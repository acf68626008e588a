from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgenas.datasets import AudioDataset, Clip, load_features, mfcc, mfcc_matrices, open_dataset
from edgenas.datasets.features import feature_cache_path, mfcc_numpy
from edgenas.errors import DataError
from edgenas.spec import DataConfig

CONFIGS = [
    DataConfig(),
    DataConfig(sample_rate=8000),
    DataConfig(sample_rate=8000, n_mfcc=13, win_ms=30, hop_ms=10),
    DataConfig(sample_rate=16000, n_mfcc=20, win_ms=32, hop_ms=16),
    DataConfig(sample_rate=16000, n_mfcc=10, n_mels=20, win_ms=25, hop_ms=10, clip_ms=500),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.key())
def test_mfcc_shape_and_reference(cfg: DataConfig) -> None:
    wave = torch.from_numpy(np.random.default_rng(0).standard_normal((3, cfg.clip_samples)).astype(np.float32) * 0.1)
    out = mfcc(wave, cfg)
    assert tuple(out.shape) == (3, *cfg.feature_shape) and out.dtype == torch.float32
    ref = mfcc_numpy(wave[1].numpy(), cfg)
    assert np.allclose(out[1].numpy(), ref, atol=1e-3)
    window, mel_fb, dct = mfcc_matrices(cfg)
    assert window.shape == (cfg.win_length,)
    assert mel_fb.shape == (cfg.n_fft // 2 + 1, cfg.n_mels) and dct.shape == (cfg.n_mels, cfg.n_mfcc)


def test_load_features_cache_reuse(sc_layout: Path, tmp_path: Path) -> None:
    ds = open_dataset(sc_layout)
    cfg = DataConfig(sample_rate=8000)
    cache = tmp_path / "cache"
    events: list[str] = []
    first = load_features(ds, "train", cfg, cache, sink=lambda e, **f: events.append(e))
    assert not first.cached and "progress.start" in events
    assert first.x.shape == (len(ds.splits["train"]), 1, *cfg.feature_shape) and first.x.dtype == np.float32
    assert first.y.dtype == np.int64 and list(first.y) == [c.label for c in ds.splits["train"]]
    assert np.isfinite(first.x).all()
    assert feature_cache_path(ds, "train", cfg, cache, noise=True).is_file()
    second = load_features(ds, "train", cfg, cache)
    assert second.cached and np.array_equal(first.x, second.x) and second.speakers == first.speakers
    clean = load_features(ds, "train", cfg, cache, augment_noise=False)
    assert not clean.cached and not np.array_equal(clean.x, first.x)  # noise mixed into train only
    val = load_features(ds, "val", cfg, cache)
    assert feature_cache_path(ds, "val", cfg, cache, noise=False).is_file() and len(val) == len(ds.splits["val"])


def test_speed_perturbation(tmp_path: Path, make_wav) -> None:
    """A 1 kHz tone played ×1.1 is a 1.1 kHz tone lasting 1/1.1 as long; its features are cached
    apart from the unperturbed ones; factors outside 0.5–2 are refused."""
    from edgenas.datasets.features import clip_wave

    tone = make_wav(tmp_path / "tone.wav", rate=16000, seconds=0.5, freq=1000.0)
    ds = AudioDataset("t", str(tmp_path), ["a"], 16000, {"train": [Clip(str(tone), 0, "s")], "val": [], "test": []})
    n = 16000

    def peak_hz(w: np.ndarray) -> float:
        mid = len(w) // 2  # the clip is centred in the window
        spec = np.abs(np.fft.rfft(w[mid - 2000:mid + 2000] * np.hanning(4000)))
        return float(np.argmax(spec)) * 16000 / 4000

    for speed in (0.9, 1.0, 1.1):
        w = clip_wave(ds, ds.splits["train"][0], 16000, n, set(), speed)
        assert w.shape == (n,)
        assert peak_hz(w) == pytest.approx(1000 * speed, abs=4.0)
        loud = np.flatnonzero(np.abs(w) > 0.01)
        assert loud[-1] - loud[0] + 1 == pytest.approx(8000 / speed, rel=0.01)  # 0.5 s at 16 kHz
    cfg = DataConfig()
    cache = tmp_path / "cache"
    plain = load_features(ds, "train", cfg, cache)
    fast = load_features(ds, "train", cfg, cache, speed=1.1)
    assert feature_cache_path(ds, "train", cfg, cache, noise=False, speed=1.1).is_file()
    assert feature_cache_path(ds, "train", cfg, cache, noise=False) != feature_cache_path(ds, "train", cfg, cache, False, 1.1)
    assert not np.allclose(plain.x, fast.x) and list(fast.y) == list(plain.y)
    assert load_features(ds, "train", cfg, cache, speed=1.1).cached
    with pytest.raises(DataError, match="speed perturbation factor must be within 0.5–2, got 3"):
        load_features(ds, "train", cfg, cache, speed=3.0)


def test_rate_above_native_is_an_error(sc_layout: Path, tmp_path: Path) -> None:
    ds = open_dataset(sc_layout)
    ds.native_rate = 8000
    with pytest.raises(DataError, match="native rate"):
        load_features(ds, "train", DataConfig(sample_rate=16000), tmp_path)


def test_silence_and_corrupt_clips(tmp_path: Path, make_wav) -> None:
    good = make_wav(tmp_path / "a.wav")
    ds = AudioDataset("t", str(tmp_path), ["_silence_", "a"], 16000,
                      {"train": [], "val": [Clip("", 0, ""), Clip(str(good), 1, "s")], "test": []})
    fs = load_features(ds, "val", DataConfig(), tmp_path / "cache")
    frames = fs.x[0, 0]  # zeros in → the same log-floor frame everywhere, only c0 non-zero
    assert np.allclose(frames, frames[0], atol=1e-4) and np.allclose(frames[:, 1:], 0, atol=1e-3)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"garbage")
    ds.splits["test"] = [Clip(str(bad), 1, "s")]
    with pytest.raises(DataError, match="bad.wav"):
        load_features(ds, "test", DataConfig(), tmp_path / "cache")


def test_fsdd_features(shared_data: Path, tmp_path: Path) -> None:
    ds = open_dataset(shared_data / "fsdd", test_speakers=["nicolas"])
    cfg = DataConfig(sample_rate=8000, n_mfcc=10, win_ms=32, hop_ms=16)
    fs = load_features(ds, "val", cfg, tmp_path)
    assert fs.x.shape == (500, 1, *cfg.feature_shape) and set(fs.speakers) == {"lucas"}
