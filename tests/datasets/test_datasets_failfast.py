"""Fail fast on unusable data: one-class datasets and NaN/inf audio are one-line DataErrors.

Real WAV files (soundfile) in every layout the loaders detect, and the real CLI for the user's
view: exit code 2, one line on stderr naming the folder or file, no traceback.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from datasets_helpers import build_fsdd, build_speech_commands, write_tone
from edgenas.datasets import open_dataset
from edgenas.datasets.audio import WaveCache, check_audio_file, load_audio
from edgenas.datasets.base import detect_layout
from edgenas.datasets.features import load_features
from edgenas.errors import DataError
from edgenas.spec import DataConfig


def _write_float(path: Path, x: np.ndarray, rate: int = 16000, subtype: str = "FLOAT") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, rate, subtype=subtype)
    return path


def _nan_wav(path: Path, rate: int = 16000, seconds: float = 1.0) -> Path:
    return _write_float(path, np.full(int(rate * seconds), np.nan, np.float32), rate)


def _one_line(e: pytest.ExceptionInfo[DataError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---- check_audio_file and load_audio --------------------------------------------------------


def test_nan_float_wav_is_rejected_naming_the_file(tmp_path: Path) -> None:
    p = _nan_wav(tmp_path / "nan.wav")
    for fn in (check_audio_file, lambda q: load_audio(q, 16000), lambda q: load_audio(q, 8000)):
        with pytest.raises(DataError) as e:
            fn(p)
        msg = _one_line(e)
        assert str(p) in msg and "16000 non-finite samples" in msg and "16000 NaN" in msg and "inf" not in msg


def test_inf_float_wav_is_rejected_naming_the_file(tmp_path: Path) -> None:
    x = 0.1 * np.sin(np.arange(8000, dtype=np.float64) / 5)
    x[100], x[200], x[300] = np.inf, -np.inf, np.nan
    p = _write_float(tmp_path / "inf.wav", x, 8000, subtype="DOUBLE")
    with pytest.raises(DataError) as e:
        check_audio_file(p)
    msg = _one_line(e)
    assert str(p) in msg and "3 non-finite samples (1 NaN, 2 inf) of 8000" in msg
    with pytest.raises(DataError, match="inf.wav"):
        load_audio(p, 8000)


def test_nan_in_one_channel_of_a_stereo_wav(tmp_path: Path) -> None:
    x = np.zeros((4000, 2), np.float32)
    x[10, 1] = np.nan
    p = _write_float(tmp_path / "stereo.wav", x, 8000)
    with pytest.raises(DataError, match=r"stereo\.wav has 1 non-finite samples \(1 NaN\) of 8000"):
        check_audio_file(p)


def test_pcm16_wav_passes_and_gives_its_duration(tmp_path: Path) -> None:
    p = write_tone(tmp_path / "ok.wav", rate=16000, seconds=0.75)
    assert check_audio_file(p) == pytest.approx(0.75)
    q = _write_float(tmp_path / "ok-float.wav", 0.5 * np.ones(800, np.float32), 8000)
    assert check_audio_file(q) == pytest.approx(0.1)
    assert np.isfinite(load_audio(q, 8000)).all()


def test_empty_wav_is_rejected_naming_the_file(tmp_path: Path) -> None:
    for subtype in ("PCM_16", "FLOAT"):
        p = _write_float(tmp_path / f"empty-{subtype}.wav", np.zeros(0, np.float32), 16000, subtype)
        with pytest.raises(DataError) as e:
            check_audio_file(p)
        assert str(p) in _one_line(e) and "empty" in str(e.value)


def test_corrupt_wav_is_rejected_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "corrupt.wav"
    p.write_bytes(b"RIFF\x00\x01garbage" + bytes(range(200)))
    with pytest.raises(DataError, match="cannot decode audio file .*corrupt.wav"):
        check_audio_file(p)


def test_wave_cache_and_features_never_see_nan(tmp_path: Path) -> None:
    """The feature path (WaveCache → load_audio) rejects a NaN clip with the file's name."""
    root = build_fsdd(tmp_path / "fsdd", ["alice", "bob", "carol"], indices=range(2))
    bad = _nan_wav(root / "recordings" / "3_alice_1.wav", 8000, 0.1)  # a training clip
    with pytest.raises(DataError, match="3_alice_1.wav"):
        WaveCache().get(bad, 8000)
    ds = open_dataset(root, test_speakers=["carol"])
    assert str(bad) in {c.path for c in ds.splits["train"]}
    cfg = DataConfig(sample_rate=8000, n_mfcc=10, n_mels=20, win_ms=25.0, hop_ms=12.5, clip_ms=100.0)
    with pytest.raises(DataError) as e:
        load_features(ds, "train", cfg, cache_dir=tmp_path / "cache")
    assert str(bad) in _one_line(e) and "NaN" in str(e.value)


def test_check_cost_per_file(tmp_path: Path) -> None:
    """A header-scan loop can afford a full check: well under 5 ms per 1 s 16 kHz WAV (about 0.1 ms measured)."""
    files = [write_tone(tmp_path / f"{i}.wav", 16000, 1.0, 300 + i) for i in range(50)]
    check_audio_file(files[0])
    t0 = time.perf_counter()
    total = sum(check_audio_file(p) for p in files)
    per_file = (time.perf_counter() - t0) / len(files)
    assert total == pytest.approx(50.0)
    assert per_file < 5e-3, f"{per_file * 1e3:.2f} ms per file"


# ---- one-class datasets, in each layout the loaders detect ----------------------------------


def _assert_one_class(root: Path, **kw: object) -> str:
    with pytest.raises(DataError) as e:
        open_dataset(root, **kw)
    msg = _one_line(e)
    assert str(root.resolve()) in msg and "1 class" in msg and "at least 2 classes are needed" in msg, msg
    return msg


def _fsdd_one_digit(folder: Path, digit: int = 4, speakers: tuple[str, ...] = ("alice", "bob", "carol")) -> None:
    for s in speakers:
        for i in range(6):
            write_tone(folder / f"{digit}_{s}_{i}.wav", 8000, 0.1, 300 + 30 * digit)


def test_one_digit_fsdd_in_recordings_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "fsdd"
    _fsdd_one_digit(root / "recordings")
    assert detect_layout(root) == "fsdd"
    assert "(4)" in _assert_one_class(root)
    _assert_one_class(root, test_speakers=["carol"])


def test_one_digit_fsdd_at_the_top_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    _fsdd_one_digit(root)
    assert detect_layout(root) == "fsdd"
    _assert_one_class(root)


def test_fsdd_whose_train_split_has_one_digit_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "fsdd"
    _fsdd_one_digit(root / "recordings", 0, ("alice", "bob"))
    build_fsdd(root, ["carol"])  # carol recorded every digit
    with pytest.raises(DataError) as e:
        open_dataset(root, test_speakers=["carol"])  # val: bob, train: alice (digit 0 only)
    msg = _one_line(e)
    assert msg.startswith(f"the train split of dataset {root.resolve()} has clips of 1 class (0)")
    ds = open_dataset(root, val_speakers=["alice"])  # official split: train holds carol's 5th takes
    assert len({c.label for c in ds.splits["train"]}) == 10


def test_one_class_csv_manifest_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "manifest"
    rows = []
    for s in ("aa", "bb", "cc"):
        for i in range(3):
            write_tone(root / "wavs" / f"{s}_{i}.wav", 16000, 0.2)
            rows.append(f"wavs/{s}_{i}.wav,dog\n")
    (root / "train.csv").write_text("file,class\n" + "".join(rows[:6]))
    (root / "val.csv").write_text("file,class\n" + "".join(rows[6:]))
    assert detect_layout(root) == "csv"
    assert "(dog)" in _assert_one_class(root)


def test_one_word_speech_commands_is_rejected(tmp_path: Path) -> None:
    speakers = [f"{i:08x}" for i in range(4)]
    root = build_speech_commands(tmp_path / "sc", ["yes"], speakers, val_speakers=(speakers[2],),
                                 test_speakers=(speakers[3],), background=False)
    assert detect_layout(root) == "speech_commands"
    assert "(yes)" in _assert_one_class(root, setup="all")
    with pytest.raises(DataError) as e:  # the default 12-class setup asks for its keyword folders
        open_dataset(root)
    assert str(root.resolve()) in _one_line(e) and "lacks the keyword folders" in str(e.value)


def test_one_class_folder_without_lists_is_rejected(tmp_path: Path) -> None:
    root = tmp_path / "words"
    for s in ("aa", "bb", "cc", "dd", "ee", "ff"):
        write_tone(root / "dog" / f"{s}_nohash_0.wav", 16000, 0.2)
    assert detect_layout(root) == "speech_commands"
    assert "(dog)" in _assert_one_class(root, setup="all")


def test_two_classes_are_enough(tmp_path: Path) -> None:
    root = tmp_path / "fsdd"
    _fsdd_one_digit(root / "recordings", 1)
    _fsdd_one_digit(root / "recordings", 2)
    ds = open_dataset(root)
    assert sorted({c.label for c in ds.splits["train"]}) == [1, 2]


# ---- the CLI: one line, non-zero exit ---------------------------------------------------------


def _cli_error_line(res) -> str:
    lines = res.err_lines()
    assert res.code == 2, res.err[-3000:]
    assert len(lines) == 1, res.err[-3000:]
    assert "Traceback" not in res.err
    assert lines[0].startswith("edgenas: error: ")
    return lines[0]


def _search(cli, root: Path, runs: Path, tiny_sets: list[str], *extra: str):
    return cli(["search", "--data", str(root), "--runs-dir", str(runs), "--name", "ff", "--search-epochs", "1",
                "--epochs", "1", "--quiet", *extra, *tiny_sets])


def _stages_started(run_dir: Path) -> list[str]:
    events = run_dir / "events.jsonl"
    if not events.is_file():
        return []
    rows = [json.loads(x) for x in events.read_text().splitlines() if x.strip()]
    return [r.get("stage") for r in rows if r.get("event") == "stage.start"]


def test_cli_rejects_a_one_class_dataset(make_fsdd, tmp_path: Path, cli, tiny_sets, isolated_env) -> None:
    root = make_fsdd(tmp_path / "one", digits=(2,), clips=3)
    line = _cli_error_line(_search(cli, root, tmp_path / "runs", tiny_sets, "--test-speakers", "s2"))
    assert str(root.resolve()) in line and "1 class (2)" in line and "at least 2 classes are needed" in line
    assert "search" not in _stages_started(tmp_path / "runs" / "kws" / "ff")


def test_cli_rejects_a_nan_training_clip(make_fsdd, tmp_path: Path, cli, tiny_sets, isolated_env) -> None:
    root = make_fsdd(tmp_path / "nan", digits=(0, 1), clips=2)
    bad = _nan_wav(root / "recordings" / "1_s0_1.wav", 8000, 0.5)  # a training clip
    line = _cli_error_line(_search(cli, root, tmp_path / "runs", tiny_sets, "--test-speakers", "s2"))
    assert str(bad) in line and "non-finite samples" in line and "NaN" in line
    assert "search" not in _stages_started(tmp_path / "runs" / "kws" / "ff")


def test_cli_rejects_a_nan_test_clip_in_the_data_stage(make_fsdd, tmp_path: Path, cli, tiny_sets,
                                                       isolated_env) -> None:
    """A test-split clip's features are computed only after training: the data stage must decode it."""
    root = make_fsdd(tmp_path / "nan", digits=(0, 1), clips=2)
    bad = _write_float(root / "recordings" / "0_s2_1.wav", np.full(4000, np.inf, np.float32), 8000)
    res = _search(cli, root, tmp_path / "runs", tiny_sets, "--test-speakers", "s2")
    line = _cli_error_line(res)
    assert str(bad) in line and "non-finite samples" in line and "inf" in line
    assert "search" not in _stages_started(tmp_path / "runs" / "kws" / "ff")
