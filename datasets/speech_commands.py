"""Google Speech Commands (v0.01 / v0.02) folder layout.

``<word>/<speaker-hash>_nohash_<n>.wav`` word folders, ``_background_noise_/*.wav``, and the
official ``validation_list.txt`` / ``testing_list.txt`` (paths relative to the root).

* Missing ``testing_list.txt``: a speaker-disjoint test split is carved from the remaining
  (training) clips by hashing the speaker id (SHA-1, as the dataset itself assigns splits):
  speakers whose hash falls in [0, 10) % go to test. A missing ``validation_list.txt`` is
  carved likewise from the [10, 20) % band. Speakers, not clips, are assigned, so the carved
  splits are speaker-disjoint from train.
* ``setup="12class"``: ``_silence_``, ``_unknown_`` and the ten keywords. ``_unknown_`` holds
  the other words, subsampled per split (deterministically) to the mean keyword-class size.
  ``_silence_`` adds about 1/11 of each split, cut from the background-noise files at
  deterministic offsets (all-zero clips, path "", when there is no background folder).
* ``setup="all"``: one class per word folder, no silence/unknown classes.

The background-noise file paths are kept in ``AudioDataset.background``; the feature
extractor mixes them into training clips.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgenas.datasets.audio import audio_duration, audio_rate
from edgenas.datasets.base import (
    AUDIO_EXTS,
    DATASETS,
    SPLITS,
    AudioDataset,
    Clip,
    speaker_fraction,
    stable_subsample,
)
from edgenas.errors import DataError
from edgenas.events import EventSink

log = logging.getLogger("edgenas.datasets")

KEYWORDS = ["yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
CLASSES_12 = [SILENCE, UNKNOWN, *KEYWORDS]
BACKGROUND_DIR = "_background_noise_"
SETUPS = ("12class", "all")
TEST_PERCENT = 10.0
VAL_PERCENT = 10.0


def speaker_of(filename: str) -> str:
    """Speaker id from a Speech Commands file name (``<speaker>_nohash_<n>.wav``)."""
    if "_nohash_" in filename:
        return filename.split("_nohash_")[0]
    stem = Path(filename).stem
    return stem.split("_")[0] if "_" in stem else ""


def _read_list(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def _silence_clips(n: int, background: list[str], durations: list[float], split: str, seed: int) -> list[Clip]:
    usable = [(p, d) for p, d in zip(background, durations) if d >= 1.0]
    if not usable:
        return [Clip("", 0, "", 0.0) for _ in range(n)]
    rng = np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else 9, 11])
    out = []
    for i in range(n):
        path, dur = usable[i % len(usable)]
        offset = round(float(rng.uniform(0.0, dur - 1.0)), 4)
        out.append(Clip(path, 0, "", offset))
    return out


@DATASETS.register("speech_commands")
def load_speech_commands(
    root: Path | None,
    *,
    setup: str = "12class",
    test_speakers: list[str] | None = None,
    val_speakers: list[str] | None = None,
    seed: int = 0,
    sink: EventSink | None = None,
    cache_dir: Path | None = None,
    name: str = "speech_commands",
    synthetic: bool = False,
) -> AudioDataset:
    """Load a Speech Commands folder in the 12-class or all-words setup (see module doc)."""
    if root is None:
        raise DataError("the speech_commands layout needs a dataset folder")
    root = Path(root).resolve()
    if setup not in SETUPS:
        raise DataError(f"unknown Speech Commands setup {setup!r} (known: {', '.join(SETUPS)})")
    if test_speakers or val_speakers:
        raise DataError(
            "test_speakers/val_speakers are not supported for Speech Commands: "
            "its splits come from validation_list.txt/testing_list.txt"
        )
    if not root.is_dir():
        raise DataError(f"dataset path {root} does not exist")
    word_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
    if not word_dirs:
        raise DataError(f"no word folders in {root}")
    files: dict[str, list[Path]] = {}
    for d in word_dirs:
        wavs = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTS)
        if not wavs:
            raise DataError(f"class folder {d} has no audio files")
        files[d.name] = wavs
    words = list(files)

    val_list = _read_list(root / "validation_list.txt")
    test_list = _read_list(root / "testing_list.txt")

    if setup == "12class":
        missing = [k for k in KEYWORDS if k not in files]
        if missing:
            raise DataError(f"{root} lacks the keyword folders {', '.join(missing)} needed by the 12-class setup")
        classes = list(CLASSES_12)
        label_of = {w: (classes.index(w) if w in KEYWORDS else classes.index(UNKNOWN)) for w in words}
    else:
        classes = list(words)
        label_of = {w: i for i, w in enumerate(words)}

    raw: dict[str, list[Clip]] = {s: [] for s in SPLITS}
    for word, wavs in files.items():
        for p in wavs:
            rel = f"{word}/{p.name}"
            spk = speaker_of(p.name)
            frac = speaker_fraction(spk) if spk else speaker_fraction(rel)
            if test_list is not None and rel in test_list:
                split = "test"
            elif val_list is not None and rel in val_list:
                split = "val"
            elif test_list is None and frac < TEST_PERCENT:
                split = "test"
            elif val_list is None and TEST_PERCENT <= frac < TEST_PERCENT + VAL_PERCENT:
                split = "val"
            else:
                split = "train"
            raw[split].append(Clip(str(p), label_of[word], spk))

    # Keep train and val speaker-disjoint even with hand-made lists.
    val_spk = {c.speaker for c in raw["val"] if c.speaker}
    leaked = [c for c in raw["train"] if c.speaker in val_spk]
    if leaked:
        log.warning("dropping %d training clips of %d validation speakers", len(leaked), len({c.speaker for c in leaked}))
        raw["train"] = [c for c in raw["train"] if c.speaker not in val_spk]

    bg_dir = root / BACKGROUND_DIR
    background = (
        sorted(str(p) for p in bg_dir.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTS)
        if bg_dir.is_dir()
        else []
    )

    splits: dict[str, list[Clip]] = {}
    if setup == "12class":
        unk = classes.index(UNKNOWN)
        durations = [audio_duration(p) for p in background]
        for s in SPLITS:
            kw = [c for c in raw[s] if c.label != unk]
            unknown = [c for c in raw[s] if c.label == unk]
            k = int(round(len(kw) / len(KEYWORDS)))
            unknown = stable_subsample(unknown, k, key=lambda c: c.path, seed=seed)
            clips = kw + unknown
            n_sil = int(round(len(clips) / 10)) if clips else 0
            splits[s] = clips + _silence_clips(n_sil, background, durations, s, seed)
    else:
        splits = raw

    if (root / "SYNTHETIC.md").is_file():  # generated by edgenas.datasets.synthetic
        synthetic = True
        name = "synthetic_kws" if name == "speech_commands" else name
    first = next((c.path for s in SPLITS for c in splits[s] if c.path), None)
    if first is None:
        raise DataError(f"no audio clips found in {root}")
    return AudioDataset(
        name=name,
        root=str(root),
        classes=classes,
        native_rate=audio_rate(first),
        splits=splits,
        synthetic=synthetic,
        background=background,
    )
