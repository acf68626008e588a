"""``edgenas search --task timeseries`` end to end on real UCR/UEA files (../shared/data), its
bundle on the board script (a CSV row and a ``.ts`` line with missing values), the time-series
front end against the training transform in both formats, the board's padding against the
training padding, the run's splits (hold-out and cross-validation folds), and bad inputs.

Real parts only: the real .ts files, real search and training, real ONNX and TFLite export and
int8 quantization, ONNX Runtime and LiteRT.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SHARED_TS = Path(__file__).resolve().parents[2] / "shared" / "data" / "ucr_uea_timeseries"
# a small space and short training: the mechanics, not accuracy
TINY = ["--set", "space.widths=8,16", "--set", "space.n_blocks=2", "--set", "train.epochs=20",
        "--set", "search.epochs=4"]

pytestmark = pytest.mark.skipif(not SHARED_TS.is_dir(), reason="../shared/data/ucr_uea_timeseries is missing")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_thread_per_module: None) -> None:
    """One torch thread while this module runs (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def ts_run(tmp_path_factory: pytest.TempPathFactory, cli_in) -> Path:
    """A search on JapaneseVowels (12 dimensions, variable length 7–26: the padding choice exists)."""
    base = tmp_path_factory.mktemp("ts-run")
    res = cli_in(base, ["search", "--task", "timeseries", "--data", str(SHARED_TS / "JapaneseVowels"),
                        "--device", "onnxruntime-cpu", "--max-ram-kb", "64", "--runs-dir", str(base / "runs"),
                        "--name", "jv", "--json", "--quiet", "--set", "search.val_folds=2", *TINY])
    assert res.code == 0, res.err
    return base / "runs" / "timeseries" / "jv"


@pytest.mark.slow
def test_timeseries_search_ships_a_verified_bundle(ts_run: Path) -> None:
    m = json.loads((ts_run / "metrics.json").read_text())
    assert m["task"] == "timeseries"
    # the architecture step validated 2-fold (search.val_folds): two supernets in the checkpoint
    assert json.loads((ts_run / "config.json").read_text())["search"]["val_folds"] == 2
    import torch

    assert len(torch.load(ts_run / "checkpoints" / "search.pt", weights_only=False)["net"]) == 2
    dc = m["data_config"]
    assert dc["dims"] == 12 and dc["length"] == 26 and dc["padding"] in ("zero", "edge", "resample")
    assert m["budgets"]["ram"]["scope"] == "end-to-end" and m["budgets"]["ram"]["frontend"]["measured"] > 0
    report = json.loads((ts_run / "export" / "report.json").read_text())
    for fmt in ("onnx", "tflite"):
        assert report["models"][f"{fmt}-int8"]["status"] == "ok"
        fe = report["frontend"][fmt]
        assert fe["status"] == "ok" and fe["max_abs_diff_vs_training_features"] < 1e-4
    assert "TRANSPOSE ×0" in (ts_run / "export" / "report.md").read_text()
    bundle = json.loads((ts_run / "bundle" / "bundle.json").read_text())
    assert bundle["input"] == "series" and bundle["task"] == "timeseries"
    info = json.loads((ts_run / "stages" / "data.json").read_text()) if (ts_run / "stages" / "data.json").exists() else None
    if info is not None:
        assert info["result"]["splits"]["test"] == 54


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_bundle_script_classifies_a_case(ts_run: Path, runtime: str, tmp_path: Path) -> None:
    """infer.py (no edgenas, no torch) on the bundle's CSV sample and on a .ts line with missing
    values and another length; a non-numeric value is one line, exit 2."""
    b = ts_run / "bundle"
    labels = (b / "labels.txt").read_text().split()
    out = subprocess.run([sys.executable, str(b / "infer.py"), str(b / "sample.csv"), "--json", "--runtime", runtime,
                          "--bench", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["label"] in labels and r["bench"]["frontend_median_ms"] > 0 and r["case"]["missing"] == 0
    line = (SHARED_TS / "JapaneseVowels" / "JapaneseVowels_TRAIN.ts").read_text().splitlines()[-1]
    dims = line.split(":")
    dims[0] = ",".join(["?"] + dims[0].split(",")[1:])  # a missing first value
    ts = tmp_path / "case.ts"
    ts.write_text("@data\n" + ":".join(dims) + "\n")
    out = subprocess.run([sys.executable, str(b / "infer.py"), str(ts), "--json", "--runtime", runtime],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["label"] in labels and r["case"]["missing"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,x\n")
    out = subprocess.run([sys.executable, str(b / "infer.py"), str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "not a number" in out.stderr, out.stderr


@pytest.mark.parametrize("name,factor,norm,padding", [("GunPoint", "1/2", "series", "zero"),
                                                      ("BasicMotions", "1/4", "dataset", "zero"),
                                                      ("JapaneseVowels", "1/2", "series", "resample"),
                                                      ("JapaneseVowels", "1", "none", "edge")])
def test_front_end_is_the_training_transform(name: str, factor: str, norm: str, padding: str, tmp_path: Path) -> None:
    """Both formats reproduce the training inputs (resample, series z / dataset standardisation)
    on the real test cases; the TFLite file has no TRANSPOSE."""
    from edgenas.export.frontend import _tflite_interpreter
    from edgenas.tasks import get_task
    from edgenas.tasks.timeseries import TSConfig, open_run_dataset

    pytest.importorskip("tensorflow")
    task = get_task("timeseries")
    ds = open_run_dataset(str(SHARED_TS / name))
    cfg = TSConfig(ds.data.dims, ds.data.max_length, factor, norm, padding)
    train = task.load_split(ds, "train", cfg, cache_dir=None, sink=lambda *a, **k: None).x
    stats = task.norm_stats(train, cfg)
    assert (stats is None) == (norm != "dataset")
    raw = task.raw_split(ds, "test", cfg, cache_dir=None)
    ref = task.load_split(ds, "test", cfg, cache_dir=None, sink=lambda *a, **k: None).x
    if stats is not None:
        ref = task.normalize(ref, stats)
    fe = task.frontend()
    for fmt in ("onnx", "tflite"):
        path = fe.export(cfg, fmt, tmp_path / f"fe.{fmt}", norm=stats)
        got = fe.run(path, raw)
        assert got.shape == ref.shape == (len(raw), cfg.dims, cfg.input_length, 1)
        np.testing.assert_allclose(got, ref, atol=2e-5 * max(1.0, float(np.abs(ref).max())))
        if fmt == "tflite":
            ops = [o["op_name"] for o in _tflite_interpreter(model_path=str(path))._get_ops_details()]
            assert "TRANSPOSE" not in ops, ops


@pytest.mark.parametrize("policy", ["zero", "edge", "resample"])
def test_board_padding_is_the_training_padding(policy: str) -> None:
    """infer.py's numpy fill + pad/resample equals ts_prep.fixed_length (missing values inside, at
    the ends and a whole missing row; shorter and longer cases)."""
    from edgenas.datasets.ts_prep import fixed_length
    from edgenas.export import bundle_infer

    rng = np.random.default_rng(3)
    for n in (5, 17, 40):
        case = rng.standard_normal((3, n)).astype(np.float32)
        case[0, [0, n // 2]] = np.nan
        case[1, -1] = np.nan
        case[2, :] = np.nan
        want = fixed_length([case], policy, 17)[0]
        got = bundle_infer.fit_case(case.astype(np.float64), policy, 17, np)
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_run_splits_holdout_and_folds() -> None:
    """No TEST file: 20% of each class is the test split, the val split is held out of the rest;
    with test_fold i/5 the five test splits are disjoint and cover TRAIN."""
    from edgenas.tasks.timeseries import open_run_dataset

    ds = open_run_dataset(str(SHARED_TS / "GunPoint"))
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes["test"] == 10 and sum(sizes.values()) == 50
    ids = [{c.index for c in ds.splits[s]} for s in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    seen: list[int] = []
    for i in range(1, 6):
        f = open_run_dataset(str(SHARED_TS / "GunPoint"), test_fold=f"{i}/5")
        seen += [c.index for c in f.splits["test"]]
        assert {c.index for c in f.splits["test"]}.isdisjoint(c.index for c in f.splits["train"] + f.splits["val"])
    assert sorted(seen) == list(range(50))


def test_bad_timeseries_inputs_are_one_line_errors(tmp_path: Path, cli, isolated_env) -> None:
    base = ["search", "--task", "timeseries", "--device", "onnxruntime-cpu", "--runs-dir", str(tmp_path / "runs"),
            "--quiet"]
    bad = tmp_path / "Bad"
    bad.mkdir()
    (bad / "Bad_TRAIN.ts").write_text("@problemName Bad\n@univariate true\n@classLabel true a b\n@data\n"
                                      "1,2,3:a\n1,2,zz:b\n")
    ragged = tmp_path / "Rag"
    ragged.mkdir()
    (ragged / "Rag_TRAIN.ts").write_text("@dimensions 2\n@classLabel true a b\n@data\n1,2:3,4:a\n1,2:3:b\n")
    cases = ((bad, "Bad_TRAIN.ts:6"), (ragged, "Rag_TRAIN.ts:5"), (tmp_path / "nowhere", "does not exist"),
             (None, "needs --data"))
    for i, (data, expect) in enumerate(cases):
        res = cli(base + ["--name", f"bad{i}"] + (["--data", str(data)] if data else []))
        lines = res.err_lines()
        assert res.code != 0 and len(lines) == 1 and "Traceback" not in res.err, res.err
        assert expect in lines[0], lines[0]
    res = cli(base + ["--name", "fold", "--data", str(SHARED_TS / "GunPoint"), "--set", "test_fold=7/5"])
    assert res.code != 0 and "test_fold" in res.err_lines()[0]
