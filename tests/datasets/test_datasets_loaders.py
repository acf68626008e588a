from __future__ import annotations

from pathlib import Path

import pytest

from datasets_helpers import KEYWORDS, build_fsdd, build_speech_commands, write_tone
from edgenas.datasets import DATASETS, AudioDataset, detect_layout, open_dataset
from edgenas.datasets.speech_commands import CLASSES_12
from edgenas.errors import DataError


def assert_disjoint(ds: AudioDataset) -> None:
    assert not ds.speakers("train") & ds.speakers("val")


def test_registry_names() -> None:
    assert {"fsdd", "csv", "speech_commands", "synthetic"} <= set(DATASETS.names())


# ---------------------------------------------------------------- FSDD


def test_fsdd_default_split(tmp_path: Path) -> None:
    root = build_fsdd(tmp_path / "fsdd", ["alice", "bob", "carol"])
    assert detect_layout(root) == "fsdd"
    ds = open_dataset(root)
    assert ds.classes == [str(d) for d in range(10)] and ds.native_rate == 8000
    assert len(ds.splits["test"]) == 3 * 10 * 5  # indices 0-4 of every speaker
    assert ds.speakers("val") == {"carol"}  # last speaker in sorted order
    assert ds.speakers("train") == {"alice", "bob"}
    assert len(ds.splits["val"]) == 10 and len(ds.splits["train"]) == 20
    assert_disjoint(ds)


def test_fsdd_speaker_options(tmp_path: Path) -> None:
    root = build_fsdd(tmp_path / "fsdd", ["alice", "bob", "carol", "dave"], indices=range(2))
    ds = open_dataset(root, test_speakers=["bob"])
    assert ds.speakers("test") == {"bob"} and ds.speakers("val") == {"dave"}
    assert ds.speakers("train") == {"alice", "carol"}
    ds = open_dataset(root, test_speakers=["bob"], val_speakers=["alice"])
    assert ds.speakers("val") == {"alice"} and ds.speakers("train") == {"carol", "dave"}
    with pytest.raises(DataError, match="known speakers: alice, bob, carol, dave"):
        open_dataset(root, test_speakers=["zed"])
    with pytest.raises(DataError, match="both test and val"):
        open_dataset(root, test_speakers=["bob"], val_speakers=["bob"])


def test_fsdd_flat_layout(tmp_path: Path) -> None:
    for s in ("a", "b"):
        for d in range(10):
            write_tone(tmp_path / "flat" / f"{d}_{s}_7.wav", 8000, 0.1)
    ds = open_dataset(tmp_path / "flat")
    assert ds.name == "fsdd" and ds.speakers("val") == {"b"} and len(ds.splits["train"]) == 10


def test_fsdd_real(shared_data: Path) -> None:
    ds = open_dataset(shared_data / "fsdd", test_speakers=["nicolas"])
    assert (len(ds.splits["test"]), len(ds.splits["val"]), len(ds.splits["train"])) == (500, 500, 1000)
    assert ds.speakers("test") == {"nicolas"} and ds.speakers("val") == {"lucas"}
    assert_disjoint(ds)
    assert not ds.speakers("test") & (ds.speakers("train") | ds.speakers("val"))
    assert ds.native_rate == 8000
    ds2 = open_dataset(shared_data / "fsdd")
    assert len(ds2.splits["test"]) == 200
    assert_disjoint(ds2)


# ---------------------------------------------------------------- Speech Commands


def test_speech_commands_12class(sc_layout: Path) -> None:
    assert detect_layout(sc_layout) == "speech_commands"
    ds = open_dataset(sc_layout)
    assert ds.classes == CLASSES_12 and len(ds.background) == 2 and not ds.synthetic
    counts = ds.counts()
    for split, n_spk in (("train", 4), ("val", 1), ("test", 1)):
        kw = sum(counts[split][2:])
        assert kw == 10 * n_spk
        assert counts[split][1] == round(kw / 10)  # unknown subsampled to a keyword-class size
        assert counts[split][0] == round((kw + counts[split][1]) / 10)  # silence about 1/11
    silence = [c for c in ds.splits["train"] if c.label == 0]
    assert all(c.path in ds.background and 0 <= c.offset <= 2.0 for c in silence)
    assert_disjoint(ds)
    assert ds.fingerprint() == open_dataset(sc_layout).fingerprint()
    assert ds.fingerprint() != open_dataset(sc_layout, seed=1).fingerprint() or counts["train"][1] == 0


def test_speech_commands_all_words(sc_layout: Path) -> None:
    ds = open_dataset(sc_layout, setup="all")
    assert ds.classes == sorted(KEYWORDS + ["bed", "cat", "dog"])
    assert sum(len(v) for v in ds.splits.values()) == 13 * 6


def test_speech_commands_without_lists_carves_speaker_disjoint_test(tmp_path: Path) -> None:
    speakers = [f"{i:08x}" for i in range(40)]
    root = build_speech_commands(tmp_path / "sc", ["yes", "no"], speakers, testing_list=False, background=False)
    (root / "validation_list.txt").unlink()
    ds = open_dataset(root, setup="all")
    assert ds.splits["test"] and ds.splits["val"]
    assert_disjoint(ds)
    assert not ds.speakers("test") & ds.speakers("train")


def test_speech_commands_silence_without_background(tmp_path: Path) -> None:
    root = build_speech_commands(tmp_path / "sc", KEYWORDS, ["aa", "bb", "cc"], val_speakers=("bb",),
                                 test_speakers=("cc",), background=False)
    ds = open_dataset(root)
    silence = [c for c in ds.splits["train"] if c.label == 0]
    assert silence and all(c.path == "" for c in silence) and ds.background == []


def test_speech_commands_missing_keyword(tmp_path: Path) -> None:
    root = build_speech_commands(tmp_path / "sc", ["yes", "no", "bed"], ["aa"])
    with pytest.raises(DataError, match="up, down"):
        open_dataset(root)
    assert len(open_dataset(root, setup="all").classes) == 3


def test_empty_class_folder(sc_layout: Path) -> None:
    (sc_layout / "empty_word").mkdir()
    with pytest.raises(DataError, match="empty_word"):
        open_dataset(sc_layout)


def test_speech_commands_real_subset(shared_data: Path) -> None:
    root = shared_data / "speech_commands_v0.01_subset"
    ds = open_dataset(root)
    assert ds.classes == CLASSES_12 and ds.native_rate == 16000
    assert all(ds.splits[s] for s in ("train", "val", "test"))
    assert_disjoint(ds)
    assert not ds.speakers("test") & ds.speakers("train")
    all_words = open_dataset(root, setup="all")
    assert len(all_words.classes) == 30
    assert sum(len(v) for v in all_words.splits.values()) == 249
    assert len(all_words.splits["val"]) == 44
    assert_disjoint(all_words)


# ---------------------------------------------------------------- CSV manifest


def _csv_dataset(root: Path, with_test: bool) -> Path:
    rows: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for s in range(10):
        split = "train" if s < 6 else "val" if s < 8 else "test"
        for c in ("go", "stop"):
            for r in range(2):
                rel = f"{c}/{s:08d}_NO_{r:02d}.wav"
                write_tone(root / rel)
                rows[split].append(f"{rel},{c}")
    for split, lines in rows.items():
        if split != "test" or with_test:
            (root / f"{split}.csv").write_text("file,class\n" + "\n".join(lines) + "\n")
    return root


def test_csv_with_test(tmp_path: Path) -> None:
    root = _csv_dataset(tmp_path / "csvds", with_test=True)
    assert detect_layout(root) == "csv"
    ds = open_dataset(root)
    assert ds.classes == ["go", "stop"]
    assert [len(ds.splits[s]) for s in ("train", "val", "test")] == [24, 8, 8]
    assert "00000000" in ds.speakers("train")
    assert_disjoint(ds)


def test_csv_without_test_carves_val(tmp_path: Path) -> None:
    root = _csv_dataset(tmp_path / "csvds", with_test=False)
    ds = open_dataset(root)
    assert len(ds.splits["test"]) == 8  # val.csv became test
    assert len(ds.speakers("val")) == 1 and len(ds.speakers("train")) == 5  # ~20 % of 6 speakers
    assert_disjoint(ds)


def test_csv_missing_file(tmp_path: Path) -> None:
    root = _csv_dataset(tmp_path / "csvds", with_test=True)
    (root / "go" / "00000000_NO_00.wav").unlink()
    with pytest.raises(DataError, match="00000000_NO_00.wav"):
        open_dataset(root)


def test_csv_real_arabic(shared_data: Path) -> None:
    ds = open_dataset(shared_data / "arabic_speech_commands")
    assert len(ds.classes) == 10 and ds.native_rate == 16000
    assert len(ds.splits["test"]) == 600
    assert len(ds.splits["train"]) + len(ds.splits["val"]) == 1800
    assert len(ds.speakers("val")) == 4 and len(ds.speakers("train")) == 14
    assert_disjoint(ds)
    assert not ds.speakers("test") & (ds.speakers("train") | ds.speakers("val"))


# ---------------------------------------------------------------- detection errors


def test_missing_and_unknown_layouts(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        open_dataset(tmp_path / "nope")
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="cannot detect"):
        open_dataset(tmp_path / "blank")
    (tmp_path / "dirs" / "word").mkdir(parents=True)
    with pytest.raises(DataError, match="word"):
        open_dataset(tmp_path / "dirs")
    with pytest.raises(Exception, match="unknown dataset"):
        open_dataset(tmp_path / "blank", layout="nosuch")
