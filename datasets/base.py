"""Core dataset types, the dataset registry and layout auto-detection."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from edgenas.errors import DataError
from edgenas.events import EventSink
from edgenas.registry import Registry
from edgenas.store import default_cache_dir

SPLITS = ("train", "val", "test")
FSDD_NAME = re.compile(r"^(\d)_(.+)_(\d+)\.wav$", re.IGNORECASE)
AUDIO_EXTS = (".wav", ".flac", ".ogg")


@dataclass(frozen=True)
class Clip:
    """One labelled audio clip."""

    path: str  # absolute path, or "" for a generated all-zeros silence clip
    label: int
    speaker: str  # speaker id ("" if unknown)
    offset: float = 0.0  # silence clips cut from background noise: start second; else 0


def split_fingerprint(header: str, classes: list[str], splits: dict[str, list[Any]],
                      line: Callable[[Any], str]) -> str:
    """16 hex digits of SHA-256 over ``header``, the class names and every split's items (one
    ``line`` each, in order): a dataset's identity in cache keys."""
    h = hashlib.sha256()
    h.update(header.encode())
    h.update("\0".join(classes).encode())
    for split in sorted(splits):
        h.update(f"\1{split}\1".encode())
        for it in splits[split]:
            h.update(line(it).encode())
    return h.hexdigest()[:16]


def class_counts(splits: dict[str, list[Any]], n_classes: int) -> dict[str, list[int]]:
    """Per split, the number of items (anything with a ``label``) of each class."""
    out: dict[str, list[int]] = {}
    for split, items in splits.items():
        n = [0] * n_classes
        for it in items:
            n[it.label] += 1
        out[split] = n
    return out


@dataclass
class AudioDataset:
    """A labelled audio dataset with speaker-aware train/val/test splits.

    ``val`` is speaker-disjoint from ``train`` (the split that updates architecture and data
    parameters must not share speakers with the one that trains the weights).
    """

    name: str
    root: str
    classes: list[str]
    native_rate: int
    splits: dict[str, list[Clip]]
    synthetic: bool = False
    background: list[str] = field(default_factory=list)

    def fingerprint(self) -> str:
        """Stable hash of name, root, classes and splits (paths, labels, offsets)."""
        return split_fingerprint(f"{self.name}\0{self.root}\0{self.native_rate}\0", self.classes, self.splits,
                                 lambda c: f"{c.path}\0{c.label}\0{c.offset:.6f}\n")

    def counts(self) -> dict[str, list[int]]:
        """Per split, the number of clips of each class."""
        return class_counts(self.splits, len(self.classes))

    def speakers(self, split: str) -> set[str]:
        return {c.speaker for c in self.splits[split] if c.speaker}

    def summary(self) -> str:
        sizes = ", ".join(f"{s} {len(self.splits.get(s, []))}" for s in SPLITS)
        return f"{self.name}: {len(self.classes)} classes, {self.native_rate} Hz, {sizes}"


Loader = Callable[..., AudioDataset]
DATASETS: Registry[Loader] = Registry("dataset")


def speaker_fraction(speaker: str, salt: str = "") -> float:
    """A deterministic number in [0, 100) from a speaker id (as Speech Commands assigns splits)."""
    digest = hashlib.sha1(f"{salt}{speaker}".encode()).hexdigest()
    return (int(digest, 16) % 10000) / 100.0


def hash_rank(keys: list[str], seed: int) -> list[int]:
    """Indices of ``keys`` in a seeded, deterministic pseudo-random order (SHA-1 of ``"seed:key"``):
    the same on every machine and numpy version. Every seeded split and subsample ranks with it."""
    return sorted(range(len(keys)), key=lambda i: hashlib.sha1(f"{seed}:{keys[i]}".encode()).hexdigest())


def held_out_count(n: int, fraction: float) -> int:
    """How many of a class of ``n`` a stratified hold-out takes: ``round(fraction · n)``, at least one
    and at most ``n − 1`` when ``n ≥ 2`` (a class of one stays on the kept side)."""
    return min(max(1, int(round(fraction * n))), n - 1) if n > 1 else 0


def pick_speakers(speakers: Iterable[str], fraction: float, seed: int) -> set[str]:
    """Deterministically choose about ``fraction`` of ``speakers`` (at least one)."""
    pool = sorted(set(speakers))
    if not pool:
        return set()
    k = max(1, int(round(fraction * len(pool))))
    return {pool[i] for i in hash_rank(pool, seed)[:k]}


def stable_subsample(items: list[Any], k: int, key: Callable[[Any], str], seed: int) -> list[Any]:
    """Deterministic subset of size ``k`` (order preserved) chosen by hashing ``key(item)``."""
    if k >= len(items):
        return list(items)
    keep = sorted(hash_rank([key(it) for it in items], seed)[:k])
    return [items[i] for i in keep]


def _has_audio(folder: Path) -> bool:
    return any(p.suffix.lower() in AUDIO_EXTS for p in folder.iterdir() if p.is_file())


def detect_layout(root: Path) -> str:
    """Name of the registered loader for the folder ``root`` (raises DataError if none fits)."""
    if not root.exists():
        raise DataError(f"dataset path {root} does not exist")
    if not root.is_dir():
        raise DataError(f"dataset path {root} is not a folder")
    if (root / "train.csv").is_file() and (root / "val.csv").is_file():
        return "csv"
    rec = root / "recordings"
    for folder in (rec, root):
        if folder.is_dir() and any(FSDD_NAME.match(p.name) for p in folder.iterdir() if p.is_file()):
            return "fsdd"
    if (root / "validation_list.txt").is_file() or (root / "testing_list.txt").is_file():
        return "speech_commands"
    subdirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))]
    if subdirs and any(_has_audio(d) for d in subdirs):
        return "speech_commands"
    if subdirs:
        raise DataError(f"no audio files in the class folders of {root} (e.g. {sorted(subdirs)[0]})")
    raise DataError(
        f"cannot detect the dataset layout of {root}: expected FSDD (<digit>_<speaker>_<n>.wav), "
        "a CSV manifest (train.csv + val.csv) or Speech Commands word folders"
    )


def open_dataset(
    path: str | Path | None,
    *,
    layout: str = "auto",
    test_speakers: list[str] | None = None,
    val_speakers: list[str] | None = None,
    seed: int = 0,
    sink: EventSink | None = None,
    cache_dir: str | Path | None = None,
    setup: str = "12class",
) -> AudioDataset:
    """Open a dataset folder (layout auto-detected) or, with ``path=None``, the synthetic demo set.

    ``layout``: "auto" or a registered loader name (``DATASETS.names()``). ``setup`` applies to
    Speech Commands layouts ("12class" or "all"). ``cache_dir`` (default
    :func:`default_cache_dir`) holds generated/downloaded data.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if path is None:
        name = "synthetic" if layout == "auto" else layout
        root: Path | None = None
    else:
        root = Path(path).expanduser().resolve()
        name = detect_layout(root) if layout == "auto" else layout
        if not root.exists():
            raise DataError(f"dataset path {root} does not exist")
    loader = DATASETS.get(name)
    ds = loader(
        root,
        test_speakers=test_speakers,
        val_speakers=val_speakers,
        seed=seed,
        sink=sink,
        cache_dir=cache,
        setup=setup,
    )
    check_classes(ds)
    return ds


def dataset_key(ds: AudioDataset) -> str:
    """Short human-readable key: ``<name>-<fingerprint>``."""
    return f"{ds.name}-{ds.fingerprint()}"


def _class_names(ds: AudioDataset, labels: list[int]) -> str:
    return ", ".join(ds.classes[i] if 0 <= i < len(ds.classes) else str(i) for i in labels) or "none"


def check_classes(ds: AudioDataset) -> None:
    """Raise DataError unless the clips of ``ds``, and of its train split, cover at least 2 classes.

    Counts the classes that have clips (an FSDD folder of one digit still lists ten classes); a
    one-class dataset would otherwise train a classifier that can only ever answer that class.
    """
    where = ds.root or ds.name
    found = sorted({c.label for clips in ds.splits.values() for c in clips})
    if len(found) < 2:
        raise DataError(
            f"dataset {where} has clips of {len(found)} class{'' if len(found) == 1 else 'es'} "
            f"({_class_names(ds, found)}); at least 2 classes are needed to train a classifier"
        )
    train = sorted({c.label for c in ds.splits.get("train", [])})
    if len(train) == 1:  # an empty train split is reported where the splits are checked
        raise DataError(
            f"the train split of dataset {where} has clips of 1 class "
            f"({_class_names(ds, train)}); at least 2 classes are needed to train a classifier"
        )


def check_disjoint(ds: AudioDataset) -> None:
    """Raise DataError if train and val share a speaker."""
    shared = ds.speakers("train") & ds.speakers("val")
    if shared:
        some = ", ".join(sorted(shared)[:5])
        raise DataError(f"{ds.name}: train and val share {len(shared)} speakers ({some}); they must be disjoint")


__all__ = [
    "AudioDataset",
    "Clip",
    "DATASETS",
    "check_classes",
    "check_disjoint",
    "default_cache_dir",
    "detect_layout",
    "open_dataset",
]
