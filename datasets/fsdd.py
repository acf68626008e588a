"""Free Spoken Digit Dataset: ``<digit>_<speaker>_<n>.wav`` under ``recordings/`` or at the top.

Splits (val is always speaker-disjoint from train):

* default (no ``test_speakers``): the official split, test = repetitions 0–4 of every speaker;
  val = the remaining clips of ``val_speakers`` (default: the last speaker in sorted order);
  train = the remaining clips of the other speakers.
* ``test_speakers=[...]``: test = every clip of those speakers; val = every clip of
  ``val_speakers`` (default: the last remaining speaker in sorted order); train = the rest.
"""

from __future__ import annotations

from pathlib import Path

from edgenas.datasets.audio import audio_rate
from edgenas.datasets.base import DATASETS, FSDD_NAME, AudioDataset, Clip
from edgenas.errors import DataError
from edgenas.events import EventSink

CLASSES = [str(d) for d in range(10)]
OFFICIAL_TEST_INDICES = range(0, 5)


def _check_known(names: list[str], known: list[str], what: str) -> None:
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise DataError(f"unknown {what} {', '.join(unknown)} (known speakers: {', '.join(known)})")


@DATASETS.register("fsdd")
def load_fsdd(
    root: Path | None,
    *,
    test_speakers: list[str] | None = None,
    val_speakers: list[str] | None = None,
    seed: int = 0,
    sink: EventSink | None = None,
    cache_dir: Path | None = None,
    setup: str = "12class",
) -> AudioDataset:
    """Load an FSDD folder (see module doc for the splits); ``setup`` is ignored."""
    if root is None:
        raise DataError("the fsdd layout needs a dataset folder")
    root = Path(root).resolve()
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    if not folder.is_dir():
        raise DataError(f"dataset path {root} does not exist")
    items: list[tuple[Path, int, str, int]] = []
    for p in sorted(folder.iterdir()):
        m = FSDD_NAME.match(p.name)
        if p.is_file() and m:
            items.append((p, int(m.group(1)), m.group(2), int(m.group(3))))
    if not items:
        raise DataError(f"no <digit>_<speaker>_<n>.wav files in {folder}")
    speakers = sorted({spk for _, _, spk, _ in items})
    test_set = set(test_speakers or [])
    val_set = set(val_speakers or [])
    _check_known(sorted(test_set), speakers, "test speaker")
    _check_known(sorted(val_set), speakers, "val speaker")
    if test_set & val_set:
        raise DataError(f"speakers {', '.join(sorted(test_set & val_set))} are both test and val speakers")
    if not val_set:
        rest = [s for s in speakers if s not in test_set]
        if len(rest) < 2:
            raise DataError(
                f"need at least two non-test speakers in {folder} to hold one out for validation "
                f"(speakers: {', '.join(speakers)})"
            )
        val_set = {rest[-1]}
    if not [s for s in speakers if s not in test_set | val_set]:
        raise DataError(f"no training speakers left in {folder} (speakers: {', '.join(speakers)})")

    splits: dict[str, list[Clip]] = {"train": [], "val": [], "test": []}
    for p, digit, spk, idx in items:
        clip = Clip(str(p), digit, spk)
        if test_set:
            split = "test" if spk in test_set else "val" if spk in val_set else "train"
        else:
            split = "test" if idx in OFFICIAL_TEST_INDICES else "val" if spk in val_set else "train"
        splits[split].append(clip)
    return AudioDataset(
        name="fsdd",
        root=str(root),
        classes=list(CLASSES),
        native_rate=audio_rate(items[0][0]),
        splits=splits,
    )
