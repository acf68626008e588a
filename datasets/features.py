"""The audio front end (MFCC per DataConfig) and the on-disk feature cache.

MFCC definition (what :func:`mfcc` computes and what an exported front end must reproduce),
with ``window, mel_fb, dct = mfcc_matrices(cfg)``::

    frame_t   = wave[t*hop : t*hop + win_length] * window        t = 0 .. n_frames-1 (no centring)
    power_t   = |rfft(frame_t, n=n_fft)|**2                      (frame zero-padded to n_fft)
    mfcc_t    = log(power_t @ mel_fb + LOG_OFFSET) @ dct         → [n_frames, n_mfcc]

``window`` is a periodic Hann window of ``win_length``; ``mel_fb`` is HTK-mel, 20 Hz – rate/2,
unnormalised triangles; ``dct`` is the orthonormal DCT-II. Internally torchaudio's MFCC
transform runs on the wave zero-padded by ``n_fft - win_length`` (split left/right as torch.stft
centres the window), which makes its frames exactly the ones above (the power spectrum does not
depend on where the window sits inside the n_fft frame).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgenas.datasets.audio import WAVE_CACHE, fit_length
from edgenas.datasets.base import AudioDataset, Clip, default_cache_dir
from edgenas.errors import DataError
from edgenas.events import EventSink, progress
from edgenas.spec import DataConfig

log = logging.getLogger("edgenas.datasets")

LOG_OFFSET = 1e-6
F_MIN = 20.0
NOISE_SEED = 1234
NOISE_PROBABILITY = 0.8  # as in the Speech Commands training recipe
NOISE_MAX_GAIN = 0.1
BATCH = 512


@lru_cache(maxsize=64)
def _transform(cfg: DataConfig) -> torch.nn.Module:
    import torchaudio.transforms as T

    return T.MFCC(
        sample_rate=cfg.sample_rate,
        n_mfcc=cfg.n_mfcc,
        dct_type=2,
        norm="ortho",
        log_mels=True,
        melkwargs=dict(
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            center=False,
            power=2.0,
            window_fn=torch.hann_window,
            f_min=F_MIN,
            f_max=cfg.sample_rate / 2,
            mel_scale="htk",
        ),
    )


def mfcc(wave: torch.Tensor, cfg: DataConfig) -> torch.Tensor:
    """MFCC features: ``wave`` [N, samples] float32 → [N, n_frames, n_mfcc] (see module doc)."""
    if wave.dim() == 1:
        wave = wave.unsqueeze(0)
    if wave.shape[-1] < cfg.win_length:
        raise DataError(f"waveform of {wave.shape[-1]} samples is shorter than one window ({cfg.win_length})")
    left = (cfg.n_fft - cfg.win_length) // 2
    padded = F.pad(wave.float(), (left, cfg.n_fft - cfg.win_length - left))
    with torch.no_grad():
        out = _transform(cfg)(padded).transpose(1, 2).contiguous()
    expected = 1 + (wave.shape[-1] - cfg.win_length) // cfg.hop_length
    assert out.shape[1] == expected, f"MFCC gave {out.shape[1]} frames, expected {expected}"
    if wave.shape[-1] == cfg.clip_samples:
        assert out.shape[1:] == cfg.feature_shape, (tuple(out.shape), cfg.feature_shape)
    return out


def mfcc_matrices(cfg: DataConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(window [win_length], mel_fb [n_fft//2+1, n_mels], dct [n_mels, n_mfcc])`` as float32.

    The same numbers :func:`mfcc` uses (taken from the transform), for exported front ends.
    """
    t = _transform(cfg)
    window = torch.hann_window(cfg.win_length)
    mel_fb = t.MelSpectrogram.mel_scale.fb
    dct = t.dct_mat
    return (
        window.numpy().astype(np.float32),
        mel_fb.detach().numpy().astype(np.float32),
        dct.detach().numpy().astype(np.float32),
    )


def mfcc_numpy(wave: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """Reference NumPy implementation of the module-doc formula: [samples] → [n_frames, n_mfcc]."""
    window, mel_fb, dct = mfcc_matrices(cfg)
    n = 1 + (len(wave) - cfg.win_length) // cfg.hop_length
    idx = np.arange(cfg.win_length)[None, :] + cfg.hop_length * np.arange(n)[:, None]
    frames = wave[idx].astype(np.float64) * window
    power = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=1)) ** 2
    return (np.log(power @ mel_fb + LOG_OFFSET) @ dct).astype(np.float32)


@dataclass
class FeatureSet:
    """Features of one split: ``x`` [N, 1, n_frames, n_mfcc] float32, ``y`` [N] int64."""

    x: np.ndarray
    y: np.ndarray
    speakers: list[str]
    cached: bool = False  # True when loaded from the on-disk cache

    def __len__(self) -> int:
        return len(self.y)


def _silence_gain(clip: Clip) -> float:
    """Deterministic level (0.1–1.0) for a silence clip cut from background noise."""
    digest = hashlib.sha1(f"{os.path.basename(clip.path)}:{clip.offset:.4f}".encode()).hexdigest()
    return 0.1 + 0.9 * (int(digest[:8], 16) / 0xFFFFFFFF)


def _segment(wave: np.ndarray, start: int, n: int) -> np.ndarray:
    seg = wave[max(0, start) : max(0, start) + n]
    return np.pad(seg, (0, n - len(seg))) if len(seg) < n else seg


def clip_wave(ds: AudioDataset, clip: Clip, rate: int, n: int, background: set[str],
              speed: float = 1.0) -> np.ndarray:
    """The clip as ``n`` float32 samples at ``rate`` (silence clips cut from background noise).

    ``speed`` ≠ 1 is speed perturbation (Ko et al., 2015): the clip is resampled to ``rate / speed``
    and played at ``rate``, so it runs ``speed`` times as fast with its pitch and formants scaled by
    ``speed`` — a cheap stand-in for other speakers' vocal tracts and speaking rates."""
    if not clip.path:
        return np.zeros(n, np.float32)
    wave = WAVE_CACHE.get(clip.path, rate if speed == 1.0 else int(round(rate / speed)))
    if clip.path in background:
        return (_segment(wave, int(round(clip.offset * rate)), n) * _silence_gain(clip)).astype(np.float32)
    return fit_length(wave, n).astype(np.float32, copy=False)


def split_waves(ds: AudioDataset, split: str, cfg: DataConfig) -> np.ndarray:
    """Raw waveforms of a split as the features see them (no noise): [N, clip_samples] float32."""
    bg = set(ds.background)
    clips = ds.splits[split]
    out = np.empty((len(clips), cfg.clip_samples), np.float32)
    for i, clip in enumerate(clips):
        out[i] = clip_wave(ds, clip, cfg.sample_rate, cfg.clip_samples, bg)
    return out


def _mix_noise(wave: np.ndarray, index: int, background: list[str], rate: int) -> np.ndarray:
    rng = np.random.default_rng([NOISE_SEED, index])
    if rng.random() >= NOISE_PROBABILITY:
        return wave
    noise = WAVE_CACHE.get(background[int(rng.integers(len(background)))], rate)
    n = len(wave)
    start = int(rng.integers(0, max(1, len(noise) - n + 1)))
    gain = rng.uniform(0.0, NOISE_MAX_GAIN)
    return np.clip(wave + gain * _segment(noise, start, n), -1.0, 1.0).astype(np.float32)


def feature_cache_path(ds: AudioDataset, split: str, cfg: DataConfig, cache_dir: str | Path | None, noise: bool,
                       speed: float = 1.0) -> Path:
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    tag = f"{'-noise' if noise else ''}{f'-speed{speed:g}' if speed != 1.0 else ''}"
    return cache / "features" / ds.fingerprint() / cfg.key() / f"{split}{tag}.npz"


def _read_cache(path: Path, n: int, cfg: DataConfig) -> FeatureSet | None:
    try:
        with np.load(path) as z:
            x, y, speakers = z["x"], z["y"], [str(s) for s in z["speakers"]]
    except (OSError, ValueError, KeyError, EOFError) as e:
        log.warning("ignoring unreadable feature cache %s: %s", path, e)
        return None
    if x.shape != (n, 1, *cfg.feature_shape) or len(y) != n:
        log.warning("ignoring stale feature cache %s", path)
        return None
    return FeatureSet(x=x, y=y, speakers=speakers, cached=True)


def _write_cache(path: Path, fs: FeatureSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            np.savez(f, x=fs.x, y=fs.y, speakers=np.array(fs.speakers, dtype=str))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_features(
    ds: AudioDataset,
    split: str,
    cfg: DataConfig,
    cache_dir: str | Path | None = None,
    sink: EventSink | None = None,
    augment_noise: bool | None = None,
    speed: float = 1.0,
) -> FeatureSet:
    """MFCC features of one split for one DataConfig, cached on disk and reused.

    Clips are loaded at ``cfg.sample_rate`` (which must not exceed ``ds.native_rate``), fitted to
    ``cfg.clip_samples``; with ``augment_noise`` (default: only for "train") background noise is
    mixed in at a random low gain (seeded per clip index, so the cache is deterministic); ``speed``
    ≠ 1 speed-perturbs every clip (:func:`clip_wave`).
    Cache file: ``<cache_dir>/features/<ds.fingerprint()>/<cfg.key()>/<split>[-noise][-speedS].npz``.
    """
    if split not in ds.splits:
        raise DataError(f"{ds.name} has no split {split!r} (splits: {', '.join(ds.splits)})")
    if cfg.sample_rate > ds.native_rate:
        raise DataError(
            f"sample rate {cfg.sample_rate} Hz is above the native rate of {ds.name} ({ds.native_rate} Hz)"
        )
    clips = ds.splits[split]
    noise = (split == "train" if augment_noise is None else augment_noise) and bool(ds.background)
    if not 0.5 <= speed <= 2.0:
        raise DataError(f"speed perturbation factor must be within 0.5–2, got {speed:g}")
    path = feature_cache_path(ds, split, cfg, cache_dir, noise, speed)
    if path.is_file():
        hit = _read_cache(path, len(clips), cfg)
        if hit is not None:
            return hit
    n = cfg.clip_samples
    bg_set = set(ds.background)
    x = np.empty((len(clips), 1, *cfg.feature_shape), np.float32)
    label = f"features {ds.name}/{split}{f' ×{speed:g} speed' if speed != 1.0 else ''} {cfg.key()}"
    with progress(sink, label, len(clips)) as tick:
        for start in range(0, len(clips), BATCH):
            batch = clips[start : start + BATCH]
            waves = np.empty((len(batch), n), np.float32)
            for j, clip in enumerate(batch):
                w = clip_wave(ds, clip, cfg.sample_rate, n, bg_set, speed)
                if noise:
                    w = _mix_noise(w, start + j, ds.background, cfg.sample_rate)
                waves[j] = w
            x[start : start + len(batch), 0] = mfcc(torch.from_numpy(waves), cfg).numpy()
            tick(len(batch))
    fs = FeatureSet(
        x=x,
        y=np.array([c.label for c in clips], dtype=np.int64),
        speakers=[c.speaker for c in clips],
    )
    _write_cache(path, fs)
    return fs
