"""The default dataset: synthetic keyword-spotting clips generated offline with espeak-ng.

Ten Speech-Commands keywords plus ten "unknown" words, spoken by synthetic speakers
(an espeak-ng voice = English accent + voice variant, with per-speaker pitch/rate/range), then
augmented (time shift inside the 1 s window, gain, white or pink noise at a random SNR),
resampled to 16 kHz and written as 16-bit wavs in the Speech Commands layout:
``<word>/<speaker>_nohash_<n>.wav``, ``validation_list.txt``/``testing_list.txt``
(speaker-disjoint by *voice*: all speakers of one voice land in one split),
``_background_noise_/*.wav`` (generated noise), ``SYNTHETIC.md`` and ``speakers.json``.

It is demo data for running the pipeline without downloads; accuracies on it say nothing about
real speech. Generation is deterministic for (seed, sizes) and written atomically (temp folder,
then rename) into ``<cache>/synthetic_kws_v1`` (default sizes and seed) and reused when complete.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgenas.datasets.audio import resample
from edgenas.datasets.base import DATASETS, AudioDataset, default_cache_dir
from edgenas.datasets.speech_commands import BACKGROUND_DIR, KEYWORDS, load_speech_commands
from edgenas.errors import DataError
from edgenas.events import EventSink, progress
from edgenas.spec import stable_hash

NAME = "synthetic_kws_v1"
RATE = 16000
UNKNOWN_WORDS = ["bed", "bird", "cat", "dog", "house", "tree", "wow", "happy", "marvin", "sheila"]
ACCENTS = ["en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-us-nyc"]
VARIANTS = [
    "", "f1", "f2", "f3", "f4", "f5", "m1", "m2", "m3", "m4", "m5", "m6", "m7",
    "klatt", "klatt2", "klatt3", "croak", "whisper", "linda", "steph", "max", "grandpa",
    "aunty", "edward", "john", "paul", "rob", "quincy",
]  # fmt: skip
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
COMPLETE = ".complete"
DEFAULT_SPEAKERS = 60
DEFAULT_CLIPS_PER_WORD = 3


@dataclass(frozen=True)
class Speaker:
    id: str
    voice: str
    pitch: int
    rate: int
    range: int
    split: str


def _espeak_paths() -> tuple[str, str]:
    try:
        import espeakng_loader
    except ImportError:
        raise DataError("the synthetic dataset needs espeak-ng: pip install espeakng-loader") from None
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def available_voices(data_path: str) -> list[str]:
    """The ``accent+variant`` voice names from ACCENTS × VARIANTS present in the espeak-ng data."""
    root = Path(data_path)
    langs = {p.name.lower() for p in (root / "lang").rglob("*") if p.is_file()}
    variants = {p.name for p in (root / "voices" / "!v").iterdir()} if (root / "voices" / "!v").is_dir() else set()
    out = []
    for a in ACCENTS:
        if a not in langs:
            continue
        for v in VARIANTS:
            if not v:
                out.append(a)
            elif v in variants:
                out.append(f"{a}+{v}")
    return out


def make_speakers(voices: list[str], n_speakers: int, seed: int) -> list[Speaker]:
    """``n_speakers`` speakers over ceil(n/2) voices (two pitch/rate variants each), split by voice."""
    rng = np.random.default_rng([seed, 1])
    n_voices = min(len(voices), max(3, math.ceil(n_speakers / 2)))
    chosen = [voices[i] for i in rng.permutation(len(voices))[:n_voices]]
    n_val = max(1, int(round(VAL_FRACTION * n_voices)))
    n_test = max(1, int(round(TEST_FRACTION * n_voices)))
    split_of = {v: ("val" if i < n_val else "test" if i < n_val + n_test else "train") for i, v in enumerate(chosen)}
    speakers = []
    for i in range(n_speakers):
        voice = chosen[i % n_voices]
        pitch = int(rng.integers(25, 76))
        rate = int(rng.integers(130, 211))
        rng_range = int(rng.integers(20, 91))
        sid = stable_hash([voice, pitch, rate, rng_range, i], n=8)
        speakers.append(Speaker(sid, voice, pitch, rate, rng_range, split_of[voice]))
    return speakers


def _run_espeak(items: list[dict], library: str, data: str, workdir: Path) -> list[np.ndarray]:
    req = workdir / "espeak_request.json"
    out = workdir / "espeak_out.npz"
    req.write_text(json.dumps({"library": library, "data": data, "items": items}))
    worker = Path(__file__).with_name("_espeak_worker.py")
    proc = subprocess.run([sys.executable, str(worker), str(req), str(out)], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise DataError(f"espeak-ng synthesis failed: {last}")
    with np.load(out) as z:
        samples, lengths, rate = z["samples"], z["lengths"], int(z["rate"])
    req.unlink()
    out.unlink()
    waves = np.split(samples.astype(np.float32) / 32768.0, np.cumsum(lengths)[:-1])
    return _resample_many(waves, rate, RATE)


def _resample_many(waves: list[np.ndarray], orig: int, new: int, batch: int = 256) -> list[np.ndarray]:
    """Resample variable-length clips in zero-padded batches (one sinc kernel per batch)."""
    out: list[np.ndarray] = []
    for i in range(0, len(waves), batch):
        chunk = waves[i : i + batch]
        width = max(1, max(len(w) for w in chunk))
        padded = np.zeros((len(chunk), width), np.float32)
        for j, w in enumerate(chunk):
            padded[j, : len(w)] = w
        res = resample(padded, orig, new)
        out.extend(res[j, : int(math.ceil(len(w) * new / orig))].copy() for j, w in enumerate(chunk))
    return out


def write_wav16(path: Path, samples: np.ndarray, rate: int) -> None:
    """Write mono 16-bit PCM with the standard library (soundfile fsyncs every file: slow)."""
    pcm = np.round(np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _colored_noise(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        x = white
    else:
        spec = np.fft.rfft(white)
        f = np.arange(len(spec), dtype=np.float64)
        f[0] = 1.0
        spec /= np.sqrt(f) if kind == "pink" else f
        x = np.fft.irfft(spec, n)
    x = x - x.mean()
    return (x / (np.sqrt(np.mean(x**2)) + 1e-12)).astype(np.float32)


def _trim(w: np.ndarray, rel: float = 0.02) -> np.ndarray:
    if len(w) == 0:
        return w
    loud = np.flatnonzero(np.abs(w) > rel * np.abs(w).max())
    return w[loud[0] : loud[-1] + 1] if len(loud) else w


def _augment(word: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Place the word at a random position in 1 s, random peak gain, noise at a random SNR."""
    w = _trim(word)
    if len(w) > RATE:
        start = (len(w) - RATE) // 2
        w = w[start : start + RATE]
    peak = float(np.abs(w).max()) if len(w) else 0.0
    if peak > 0:
        w = w / peak * rng.uniform(0.2, 0.9)
    clip = np.zeros(RATE, np.float32)
    start = int(rng.integers(0, RATE - len(w) + 1))
    clip[start : start + len(w)] = w
    if rng.random() < 0.8 and len(w):
        kind = "white" if rng.random() < 0.5 else "pink"
        snr_db = rng.uniform(5.0, 35.0)
        signal_rms = float(np.sqrt(np.mean(w**2)))
        clip += _colored_noise(rng, RATE, kind) * signal_rms / (10 ** (snr_db / 20))
    return np.clip(clip, -1.0, 1.0)


def _folder_name(seed: int, n_speakers: int, clips_per_word: int) -> str:
    if (seed, n_speakers, clips_per_word) == (0, DEFAULT_SPEAKERS, DEFAULT_CLIPS_PER_WORD):
        return NAME
    return f"{NAME}-s{seed}-n{n_speakers}-c{clips_per_word}"


def _generate(out: Path, seed: int, n_speakers: int, clips_per_word: int, sink: EventSink | None) -> None:
    library, data = _espeak_paths()
    voices = available_voices(data)
    if len(voices) < 3:
        raise DataError(f"espeak-ng data at {data} has fewer than 3 English voices")
    speakers = make_speakers(voices, n_speakers, seed)
    plan: list[tuple[str, Speaker, int]] = []  # (word, speaker, repetition)
    for spk in speakers:
        for word in KEYWORDS:
            plan.extend((word, spk, r) for r in range(clips_per_word))
        plan.extend((word, spk, 0) for word in UNKNOWN_WORDS)
    rng = np.random.default_rng([seed, 2])
    items = [
        {
            "text": word,
            "voice": spk.voice,
            "rate": int(np.clip(spk.rate + rng.integers(-15, 16), 80, 450)),
            "pitch": int(np.clip(spk.pitch + rng.integers(-6, 7), 0, 99)),
            "range": spk.range,
        }
        for word, spk, _ in plan
    ]
    with progress(sink, "synthesising keywords (espeak-ng)", len(items)) as tick:
        waves = _run_espeak(items, library, data, out)
        tick(len(items))
    val_lines, test_lines = [], []
    for word in KEYWORDS + UNKNOWN_WORDS:
        (out / word).mkdir()
    with progress(sink, "writing synthetic clips", len(plan)) as tick:
        for i, ((word, spk, rep), wave) in enumerate(zip(plan, waves)):
            clip = _augment(wave, np.random.default_rng([seed, 3, i]))
            rel = f"{word}/{spk.id}_nohash_{rep}.wav"
            write_wav16(out / rel, clip, RATE)
            if spk.split == "val":
                val_lines.append(rel)
            elif spk.split == "test":
                test_lines.append(rel)
            if i % 100 == 99:
                tick(100)
        tick(len(plan) % 100)
    (out / "validation_list.txt").write_text("".join(f"{r}\n" for r in sorted(val_lines)))
    (out / "testing_list.txt").write_text("".join(f"{r}\n" for r in sorted(test_lines)))
    bg = out / BACKGROUND_DIR
    bg.mkdir()
    noise_rng = np.random.default_rng([seed, 4])
    for kind in ("white", "pink", "brown"):
        noise = _colored_noise(noise_rng, 15 * RATE, kind) * 0.1
        write_wav16(bg / f"{kind}_noise.wav", noise, RATE)
    (out / "speakers.json").write_text(json.dumps([spk.__dict__ for spk in speakers], indent=1))
    (out / "SYNTHETIC.md").write_text(
        "# Synthetic keyword-spotting demo data (edgenas)\n\n"
        "THIS IS SYNTHETIC DATA, NOT RECORDED SPEECH. Every clip was generated offline by espeak-ng\n"
        "(formant synthesis) and augmented with time shift, gain and white/pink noise. Use it to run\n"
        "the pipeline end to end without downloads; accuracies on it say nothing about real speech.\n\n"
        f"- layout: Google Speech Commands (`<word>/<speaker>_nohash_<n>.wav`), 16 kHz, 16-bit, 1 s\n"
        f"- keywords: {' '.join(KEYWORDS)}; unknown words: {' '.join(UNKNOWN_WORDS)}\n"
        f"- speakers: {len(speakers)} (espeak-ng voice + pitch/rate/range, see speakers.json) over "
        f"{len({s.voice for s in speakers})} voices; validation/testing lists are voice-disjoint from train\n"
        f"- clips: {len(plan)} ({clips_per_word} per keyword and 1 per unknown word per speaker)\n"
        f"- `_background_noise_/`: generated white, pink and brown noise\n"
        f"- generator: edgenas.datasets.synthetic ({NAME}), seed {seed}\n"
    )


def ensure_synthetic_kws(
    cache_dir: str | Path | None = None,
    seed: int = 0,
    sink: EventSink | None = None,
    *,
    n_speakers: int = DEFAULT_SPEAKERS,
    clips_per_word: int = DEFAULT_CLIPS_PER_WORD,
) -> Path:
    """Generate (once) and return the folder of the synthetic keyword-spotting dataset.

    ``cache_dir`` defaults to :func:`default_cache_dir`. ``n_speakers`` (≥ 3) and
    ``clips_per_word`` (repetitions of each keyword per speaker) set the size; the defaults give
    2,400 clips. Non-default settings get their own folder.
    """
    if n_speakers < 3 or clips_per_word < 1:
        raise DataError("the synthetic dataset needs n_speakers >= 3 and clips_per_word >= 1")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / _folder_name(seed, n_speakers, clips_per_word)
    if (target / COMPLETE).is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=cache))
    try:
        _generate(tmp, seed, n_speakers, clips_per_word, sink)
        (tmp / COMPLETE).write_text("ok\n")
        if target.exists() and not (target / COMPLETE).is_file():
            shutil.rmtree(target)  # left over from an interrupted older run
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / COMPLETE).is_file():  # not a concurrent generator that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@DATASETS.register("synthetic")
def load_synthetic(
    root: Path | None,
    *,
    test_speakers: list[str] | None = None,
    val_speakers: list[str] | None = None,
    seed: int = 0,
    sink: EventSink | None = None,
    cache_dir: Path | None = None,
    setup: str = "12class",
) -> AudioDataset:
    """The synthetic demo set (generated with seed 0 into ``cache_dir`` if needed), 12-class setup."""
    folder = Path(root) if root is not None else ensure_synthetic_kws(cache_dir, seed=0, sink=sink)
    return load_speech_commands(
        folder, setup=setup, test_speakers=test_speakers, val_speakers=val_speakers, seed=seed,
        name="synthetic_kws", synthetic=True,
    )
