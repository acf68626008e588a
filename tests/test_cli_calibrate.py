"""`edgenas calibrate` end to end, and `edgenas search` picking the calibrated predictor up."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.fixture
def space_sets(tiny_sets: list[str]) -> list[str]:
    return [a for pair in zip(tiny_sets[::2], tiny_sets[1::2]) if pair[1].startswith("space.") for a in pair]


def test_calibrate_then_search_uses_the_predictor(tone_fsdd: Path, tmp_path: Path, cli, isolated_env, space_sets,
                                                  tiny_sets, one_thread_per_module) -> None:
    res = cli(["calibrate", "--device", "onnxruntime-cpu", "--samples", "16", "--runs", "5", *space_sets,
               "--json", "--quiet"])
    assert res.code == 0, res.err
    rep = res.json()
    assert rep["samples"] == 16 and rep["holdout"] == 3
    pred = Path(rep["predictor"])
    assert pred.is_file() and pred.parent.parent == isolated_env["EDGENAS_CACHE"] / "predictors"
    res = cli(["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--search-epochs", "2", "--epochs", "2",
               "--max-latency-ms", "5", "--runs-dir", str(tmp_path / "runs"), "--name", "p", "--json", *tiny_sets])
    assert res.code == 0, res.err[-2000:]
    m = res.json()
    assert m["latency_ms"]["predicted_by"] == "learned"
    assert m["latency_ms"]["predicted"] > 0 and m["budgets"]["latency"]["measured"] > 0
    budgets = json.loads((tmp_path / "runs" / "kws" / "p" / "state.json").read_text())["stages"]["budgets"]["result"]
    assert budgets["latency_model"]["kind"] == "learned" and budgets["latency_model"]["path"] == str(pred)
    report = (tmp_path / "runs" / "kws" / "p" / "report.md").read_text()
    assert "calibrated predictor" in report and str(pred) in report
    assert "latency model: calibrated predictor" in res.err

    # the same predictor kept outside the cache is found through measure.predictors
    elsewhere = tmp_path / "shared-predictors"
    shutil.move(str(pred.parent.parent), elsewhere)
    res = cli(["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--search-epochs", "1", "--epochs", "1",
               "--max-latency-ms", "5", "--runs-dir", str(tmp_path / "runs"), "--name", "q", "--json", *tiny_sets,
               "--set", f"measure.predictors={elsewhere}"])
    assert res.code == 0, res.err[-2000:]
    assert res.json()["latency_ms"]["predicted_by"] == "learned"
    budgets = json.loads((tmp_path / "runs" / "kws" / "q" / "state.json").read_text())["stages"]["budgets"]["result"]
    assert budgets["latency_model"]["path"] == str(elsewhere / pred.relative_to(pred.parent.parent))
    res = cli(["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--search-epochs", "1", "--epochs", "1",
               "--max-latency-ms", "5", "--runs-dir", str(tmp_path / "runs"), "--name", "r", *tiny_sets,
               "--set", f"measure.predictors={tmp_path / 'nosuch'}"])
    assert res.code != 0 and len(res.err_lines()) == 1 and "measure.predictors" in res.err, res.err
    assert "Traceback" not in res.err


def test_search_without_a_predictor_says_table(tone_fsdd: Path, tmp_path: Path, cli, isolated_env, tiny_sets,
                                               one_thread_per_module) -> None:
    res = cli(["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--search-epochs", "1", "--epochs", "1",
               "--max-latency-ms", "5", "--latency-stat", "p25", "--runs-dir", str(tmp_path / "runs"), "--name", "t",
               "--json", *tiny_sets])
    assert res.code == 0, res.err[-2000:]
    m = res.json()
    assert m["latency_ms"]["predicted_by"] == "table+fit" and m["latency_ms"]["statistic"] == "p25"
    assert m["budgets"]["latency"]["model"]["measured"] == m["latency_ms"]["budgeted"] <= m["latency_ms"]["int8_median"]
    assert "latency model: lookup table (no calibrated predictor" in res.err


def test_calibrate_errors_are_one_line(cli, isolated_env) -> None:
    for argv, text in ((["calibrate", "--device", "nosuch"], "nosuch"),
                       (["calibrate", "--device", "onnxruntime-cpu", "--samples", "3"], "at least 10"),
                       (["calibrate", "--device", "onnxruntime-cpu", "--set", "train.epochs=3"], "only space.*"),
                       (["calibrate", "--device", "onnxruntime-cpu", "--format", "tflite-int8"], "runs onnx models")):
        res = cli(argv)
        assert res.code != 0 and len(res.err_lines()) == 1 and text in res.err, (argv, res.err)
        assert "Traceback" not in res.err
