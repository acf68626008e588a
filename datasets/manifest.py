"""CSV manifest layout: ``train.csv``, ``val.csv`` and optional ``test.csv`` (columns ``file,class``).

Paths are relative to the folder of the CSV files. The speaker id is the file-name prefix before
the first ``_`` (``00000030_NO_06.wav`` → ``00000030``). Classes are the sorted class names.

Without ``test.csv``, ``val.csv`` becomes the test split and a new val split is carved from
train by holding out whole speakers (about 20 %, chosen by hashing speaker ids with the seed),
so train and val stay speaker-disjoint.
"""

from __future__ import annotations

import csv
from pathlib import Path

from edgenas.datasets.audio import audio_rate
from edgenas.datasets.base import DATASETS, AudioDataset, Clip, pick_speakers
from edgenas.errors import DataError
from edgenas.events import EventSink

VAL_FRACTION = 0.2


def speaker_of(path: str) -> str:
    stem = Path(path).stem
    return stem.split("_")[0] if "_" in stem else ""


def _read_csv(path: Path) -> list[tuple[str, str]]:
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            fields = [h.strip() for h in (reader.fieldnames or [])]
            if "file" not in fields or "class" not in fields:
                raise DataError(f"{path} must have the columns file,class (found: {', '.join(fields) or 'none'})")
            rows = [((r.get("file") or "").strip(), (r.get("class") or "").strip()) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    bad = [i + 2 for i, (f, c) in enumerate(rows) if not f or not c]
    if bad:
        raise DataError(f"{path}: empty file or class on line {bad[0]}")
    return rows


@DATASETS.register("csv")
def load_manifest(
    root: Path | None,
    *,
    test_speakers: list[str] | None = None,
    val_speakers: list[str] | None = None,
    seed: int = 0,
    sink: EventSink | None = None,
    cache_dir: Path | None = None,
    setup: str = "12class",
) -> AudioDataset:
    """Load a CSV-manifest dataset (see module doc); ``setup`` is ignored."""
    if root is None:
        raise DataError("the csv layout needs a dataset folder")
    root = Path(root).resolve()
    if test_speakers or val_speakers:
        raise DataError("test_speakers/val_speakers are not supported for CSV manifests: their splits come from the CSV files")
    for name in ("train.csv", "val.csv"):
        if not (root / name).is_file():
            raise DataError(f"{root} has no {name}")
    tables = {s: _read_csv(root / f"{s}.csv") for s in ("train", "val")}
    if (root / "test.csv").is_file():
        tables["test"] = _read_csv(root / "test.csv")
    classes = sorted({c for rows in tables.values() for _, c in rows})
    if not classes:
        raise DataError(f"no classes in the CSV files of {root}")
    label = {c: i for i, c in enumerate(classes)}

    clips: dict[str, list[Clip]] = {}
    for split, rows in tables.items():
        out = []
        for f, c in rows:
            p = (root / f).resolve()
            if not p.is_file():
                raise DataError(f"{root / f'{split}.csv'} lists a missing file {p}")
            out.append(Clip(str(p), label[c], speaker_of(f)))
        clips[split] = out

    if "test" not in clips:
        clips["test"] = clips["val"]
        held = pick_speakers((c.speaker for c in clips["train"] if c.speaker), VAL_FRACTION, seed)
        clips["val"] = [c for c in clips["train"] if c.speaker in held]
        clips["train"] = [c for c in clips["train"] if c.speaker not in held]
    if not clips["train"]:
        raise DataError(f"{root}: the training split is empty")
    return AudioDataset(
        name=root.name or "csv",
        root=str(root),
        classes=classes,
        native_rate=audio_rate(clips["train"][0].path),
        splits={s: clips[s] for s in ("train", "val", "test")},
    )
