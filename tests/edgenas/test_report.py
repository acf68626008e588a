"""metrics.json and report.md, rebuilt from a copy of the session's finished end-to-end run."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from edgenas import config as C
from edgenas import cost
from edgenas.cli import _print_summary
from edgenas.pipeline import Pipeline
from edgenas.report import build_metrics, render_report
from edgenas.runs import RunDir
from edgenas.spec import ArchSpec


@pytest.fixture
def run_copy(finished_run, tmp_path: Path, shared_env) -> Path:
    dst = tmp_path / "runs" / "kws" / finished_run.name
    shutil.copytree(finished_run.path, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _open(path: Path, **changes):
    cfg = C.from_dict(json.loads((path / "config.json").read_text()))
    cfg = replace(cfg, **changes)
    run = RunDir(path, resume=True)
    spec = ArchSpec.from_json((path / "arch.json").read_text())
    return run, Pipeline(cfg, run), spec


def test_metrics_rebuild_from_the_run_state(run_copy: Path) -> None:
    saved = json.loads((run_copy / "metrics.json").read_text())
    run, p, spec = _open(run_copy)
    with run:
        m = json.loads(json.dumps(build_metrics(p.record(), spec)))
    for key in ("arch_hash", "accuracy", "latency_ms", "budgets", "macs", "params", "flash_bytes", "ram_bytes",
                "data_config", "choices", "dataset", "all_budgets_hold"):
        assert m[key] == saved[key], key
    assert m["run_dir"] == str(run_copy)
    state = json.loads((run_copy / "state.json").read_text())
    assert m["stage_seconds"] == {k: v["seconds"] for k, v in state["stages"].items()}
    assert m["total_seconds"] == pytest.approx(sum(m["stage_seconds"].values()), abs=0.01)
    meas = state["stages"]["measure"]["result"]
    assert m["latency_ms"]["int8_median"] == meas["int8"]["latency"]["median_ms"]
    assert m["budgets"]["ram"]["model"]["measured"] == meas["int8"]["peak_activation_bytes"]


def test_report_is_reproducible(run_copy: Path) -> None:
    saved = json.loads((run_copy / "metrics.json").read_text())
    run, p, spec = _open(run_copy)
    with run:
        p.latency_table()  # the table the run used, read back from the measurement store
        text = render_report(p.record(), spec, saved)
    original = (run_copy / "report.md").read_text().rstrip("\n").splitlines()
    again = text.rstrip("\n").splitlines()

    # state.json and metrics.json are saved with sorted keys, so the split dicts on the dataset line
    # and the rows of the stage-time table may come back in another order; everything else is identical
    def norm(line: str) -> str:
        return "".join(sorted(line)) if line.startswith("- dataset:") else line

    assert sorted(map(norm, again)) == sorted(map(norm, original))
    cut = original.index("## Stage times")
    assert [norm(x) for x in again[:cut]] == [norm(x) for x in original[:cut]]


def test_report_sections_and_per_layer_table(run_copy: Path) -> None:
    saved = json.loads((run_copy / "metrics.json").read_text())
    run, p, spec = _open(run_copy)
    with run:
        text = render_report(p.record(), spec, saved)
        layers = p.space.layers(spec)
        selection = p.space.selection(spec)
    for section in ("## Summary", "## Budgets (as measured)", "## Architecture", "## Per-layer cost", "## Search",
                    "## Stage times"):
        assert section in text
    assert "SYNTHETIC" not in text
    assert f"arch hash `{spec.hash()}`" in text
    assert f"input {spec.data.n_frames}×{spec.data.n_mfcc}" in text and f"(FFT {spec.data.n_fft})" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:] in
            {d.name for d in layers}]
    assert [r.split(" | ")[0][2:] for r in rows] == [d.name for d in layers]
    for row, d in zip(rows, layers):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[7] == f"{d.macs:,}" and cells[8] == f"{d.params:,}"
        assert cells[10] == f"{cost.ram_bytes(d):,.0f}"
        assert cells[11] == "–"  # no latency table loaded
    for k, v in selection.items():
        assert f"| {k} | {v} |" in text
    search = json.loads((run_copy / "search.json").read_text())
    assert sum(1 for line in text.splitlines() if line.startswith("| 1 | warmup") or line.startswith("| 2 | ")) \
        == len(search["history"])


def test_violated_budget_is_reported(run_copy: Path) -> None:
    run, p, spec = _open(run_copy, max_ram_kb=0.001, max_latency_ms=1e-6)
    with run:
        m = build_metrics(p.record(), spec)
        text = render_report(p.record(), spec, m)
    assert m["budgets"]["ram"]["holds"] is False and m["budgets"]["latency"]["holds"] is False
    assert m["all_budgets_hold"] is False
    assert text.count("**VIOLATED**") == 2


def test_no_budgets(run_copy: Path) -> None:
    run, p, spec = _open(run_copy, max_ram_kb=0.0, max_latency_ms=0.0)
    with run:
        m = build_metrics(p.record(), spec)
        text = render_report(p.record(), spec, m)
    assert m["budgets"] == {} and m["all_budgets_hold"] is True
    assert "No budgets were given." in text


def test_synthetic_data_is_flagged(run_copy: Path) -> None:
    saved = json.loads((run_copy / "metrics.json").read_text())
    saved["dataset"]["synthetic"] = True
    run, p, spec = _open(run_copy)
    with run:
        text = render_report(p.record(), spec, saved)
    assert "SYNTHETIC DEMO DATA" in text.split("## Summary")[0]


def test_latency_table_column_when_loaded(run_copy: Path) -> None:
    run, p, spec = _open(run_copy)
    saved = json.loads((run_copy / "metrics.json").read_text())
    with run:
        table = p.latency_table()
        text = render_report(p.record(), spec, saved)
    assert table.measured == 0  # every layer came from the shared store, nothing re-measured
    for d in p.space.layers(spec):
        assert f"| {table.layer_ms(d):.4f} |" in text
    assert f"Latency table: {len(table.entries)} layer micro-models" in text


def test_data_first_scores_are_reported(run_copy: Path) -> None:
    saved = json.loads((run_copy / "metrics.json").read_text())
    run, p, spec = _open(run_copy)
    with run:
        assert "Data first:" not in render_report(p.record(), spec, saved)  # one data configuration: nothing scored
        search = json.loads((run_copy / "search.json").read_text())
        search["data_scores"] = [
            {"data": spec.data.key(), "val_loss": 0.5, "val_acc": 0.8, "penalty": 0.0, "score": 0.5},
            {"data": "sr8000_mfcc40_mel40_w30_h10_c1000", "val_loss": 0.4, "val_acc": 0.85, "penalty": 0.3, "score": 0.7}]
        run.write_json("search.json", search)
        text = render_report(p.record(), spec, saved)
    assert "Data first:" in text
    assert f"| {spec.data.key()} | 0.500 | 0.800 | 0.000 | 0.500 |" in text
    assert "| sr8000_mfcc40_mel40_w30_h10_c1000 | 0.400 | 0.850 | 0.300 | 0.700 |" in text


def test_an_over_budget_latency_is_measured_again(run_copy: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The measure stage confirms a latency over the budget with more passes (measure.confirm); the
    figure, report and CLI summary say so. A model really over its budget stays over."""
    monkeypatch.setenv("EDGENAS_STORE", str(tmp_path / "fresh.sqlite"))  # measured now, not from the store
    cfg = C.from_dict(json.loads((run_copy / "config.json").read_text()))
    run, p, spec = _open(run_copy, max_latency_ms=1e-6, measure=replace(cfg.measure, confirm=2, runs=20))
    with run:
        out = p._stage_measure(spec)
        passes = out["int8"]["latency_passes_ms"]
        assert len(passes) == 3 and out["int8"]["latency_stat_ms"] == min(passes)
        assert "latency_passes_ms" not in out["fp32"]  # only the budgeted model is confirmed
        fe_passes = out["frontend"]["latency_passes_ms"]  # and, over end to end, the shipped front end
        assert len(fe_passes) == 3 and out["frontend"]["latency_stat_ms"] == min(fe_passes)
        run.state["stages"]["measure"]["result"] = out
        m = build_metrics(p.record(), spec)
        text = render_report(p.record(), spec, m)
    assert m["latency_ms"]["passes"] == passes and m["budgets"]["latency"]["holds"] is False
    assert "3 passes (" in text and "the lowest is the figure" in text
    _print_summary(m)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("budget latency"))
    assert line.endswith(f"VIOLATED (model: lowest of 3 passes: {', '.join(f'{x:.4g}' for x in passes)} ms)")
    run, p, spec = _open(run_copy, max_latency_ms=1e-6, measure=replace(cfg.measure, confirm=0, runs=20))
    with run:
        assert "latency_passes_ms" not in p._stage_measure(spec)["int8"]  # confirm = 0: one pass


def test_file_list_names_only_files_that_exist(run_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a plain install (no TensorFlow) the report lists what was written and names the extra."""
    import importlib.util

    from edgenas.report import _file_list

    text = _file_list(run_copy)
    for name in ("model.int8.onnx", "frontend.fp32.onnx", "model.int8.tflite", "frontend.fp32.tflite"):
        assert name in text, name
    assert "No TFLite files" not in text
    for f in (run_copy / "export").glob("*.tflite"):
        f.unlink()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",  # TensorFlow missing (fault injection)
                        lambda name, *a: None if name == "tensorflow" else real(name, *a))
    text = _file_list(run_copy)
    assert ".tflite," not in text and "(frontend.fp32.onnx, model.fp32.onnx, model.int8.onnx" in text
    assert "pip install 'edgenas[tflite]'" in text and "edgenas export RUN --format tflite" in text

