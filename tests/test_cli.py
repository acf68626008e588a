"""The ``edgenas`` command line, end to end on a tiny FSDD of synthetic tones, and its user errors.

Real parts only: real wav files, real feature extraction, real search and training, real ONNX
export and int8 quantization, real ONNX Runtime measurements, a real SQLite store. The one
end-to-end search is shared with test_report.py (``finished_run`` in tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgenas.spec import ArchSpec

ARTIFACTS = ("config.json", "arch.json", "model.pt", "export/model.fp32.onnx", "export/model.int8.onnx",
             "export/model.fp32.tflite", "export/model.int8.tflite", "export/frontend.fp32.onnx",
             "export/frontend.fp32.tflite", "export/report.md", "bundle/bundle.json", "bundle.tar.gz", "metrics.json",
             "report.md")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_thread_per_module: None) -> None:
    """One torch thread while this module runs (see tests/conftest.py)."""


@pytest.fixture(autouse=True)
def _env(shared_env: dict[str, Path]) -> dict[str, Path]:
    """Feature cache and measurement store in the session's tmp dir, shared with the e2e run."""
    return shared_env


def _one_error_line(res) -> str:
    lines = res.err_lines()
    assert len(lines) == 1, res.err
    assert "Traceback" not in res.err
    assert lines[0].startswith("edgenas: error: ") or lines[0].startswith("edgenas: interrupted")
    return lines[0]


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "events.jsonl").read_text().splitlines()]


# ---- the end-to-end run ----------------------------------------------------------------------

def test_e2e_run_dir_has_every_artifact(finished_run) -> None:
    for name in ARTIFACTS:
        assert (finished_run.path / name).is_file(), name
        assert (finished_run.path / name).stat().st_size > 0, name
    assert (finished_run.path / "checkpoints" / "search.pt").is_file()
    assert (finished_run.path / "checkpoints" / "final.pt").is_file()
    assert not [p for p in finished_run.path.rglob("*") if p.name.endswith(".tmp")]
    state = json.loads((finished_run.path / "state.json").read_text())
    assert set(state["stages"]) == {"config", "data", "budgets", "search", "derive", "train", "export",
                                    "measure", "report"}


def test_e2e_json_on_stdout(finished_run) -> None:
    m = finished_run.result.json()  # stdout is exactly one JSON object
    assert m == json.loads((finished_run.path / "metrics.json").read_text())
    assert Path(m["run_dir"]) == finished_run.path
    assert set(m["budgets"]) == {"latency", "ram"}
    for name, b in m["budgets"].items():
        assert isinstance(b["holds"], bool)
        assert b["holds"] == (b["measured"] <= b["limit"])
        # budgets are end to end by default: the shipped front end + the int8 classifier
        assert b["scope"] == "end-to-end"
        assert b["artifact"] == "model.int8.onnx + frontend.fp32.onnx"
        assert b["model"]["artifact"] == "model.int8.onnx" and b["frontend"]["artifact"] == "frontend.fp32.onnx"
        for what in ("measured", "estimated"):
            assert b[what] == pytest.approx(b["model"][what] + b["frontend"][what], rel=1e-6)
            assert b["model"][what] > 0 and b["frontend"][what] > 0
    assert m["budgets"]["ram"]["limit"] == 512 * 1024 and m["budgets"]["latency"]["limit"] == 5.0
    assert m["budgets"]["latency"]["estimated"] > 0  # predicted by the measured latency table
    assert m["budgets"]["latency"]["frontend"]["measured"] == m["latency_ms"]["frontend_budgeted"]
    assert m["budgets"]["ram"]["model"]["measured"] == m["ram_bytes"]["int8_graph"]
    assert m["all_budgets_hold"] == all(b["holds"] for b in m["budgets"].values())
    assert m["latency_ms"]["int8_median"] > 0 and m["latency_ms"]["fp32_median"] > 0
    # onnxruntime-cpu's profile budgets the p10 of samples pooled over 10 loads
    assert m["latency_ms"]["statistic"] == "p10"
    assert m["budgets"]["latency"]["model"]["measured"] == m["latency_ms"]["budgeted"] <= m["latency_ms"]["int8_median"]
    for k in ("test_fp32_torch", "test_onnx_fp32", "test_onnx_int8", "test_tflite_fp32", "test_tflite_int8",
              "argmax_agreement_int8", "argmax_agreement_tflite_int8"):
        assert 0.0 <= m["accuracy"][k] <= 1.0, k
    assert m["dataset"]["splits"] == {"train": 24, "val": 24, "test": 24}  # s0 train, s1 val, s2 test
    assert m["dataset"]["synthetic"] is False
    assert m["data_config"]["sample_rate"] == 8000 and m["data_config"]["n_mfcc"] == 10
    assert m["macs"] > 0 and m["params"] > 0 and m["flash_bytes"]["int8_file"] > 0
    assert "run directory:" in finished_run.result.err  # progress goes to stderr, never stdout


def test_e2e_artifacts_agree(finished_run) -> None:
    import onnxruntime as ort

    from edgenas.export.onnx_export import read_metadata

    path = finished_run.path
    spec = ArchSpec.from_json((path / "arch.json").read_text())
    m = json.loads((path / "metrics.json").read_text())
    assert spec.hash() == m["arch_hash"] and spec.choices == m["choices"]
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["space"]["widths"] == [8, 16] and cfg["space"]["n_blocks"] == 2
    assert cfg["search"]["epochs"] == 2 and cfg["train"]["epochs"] == 3 and cfg["test_speakers"] == ["s2"]
    assert cfg["measure"]["runs"] == 20 and cfg["max_ram_kb"] == 512.0
    for name in ("export/model.fp32.onnx", "export/model.int8.onnx"):
        md = read_metadata(path / name)
        assert md["arch_hash"] == spec.hash()
        sess = ort.InferenceSession(str(path / name), providers=["CPUExecutionProvider"])
        x = np.zeros((1, 1, *spec.data.feature_shape), np.float32)
        (out,) = sess.run(None, {sess.get_inputs()[0].name: x})
        assert out.shape == (1, 10)
    assert (read_metadata(path / "export/model.int8.onnx")["quant_scheme"]
            != read_metadata(path / "export/model.fp32.onnx")["quant_scheme"])
    assert m["exports"] == {"onnx-fp32": "ok", "onnx-int8": "ok", "tflite-fp32": "ok", "tflite-int8": "ok"}
    export = json.loads((path / "export" / "report.json").read_text())
    assert export["models"]["tflite-int8"]["verification"]["fully_int8"] is True
    assert export["models"]["tflite-int8"]["transpose_ops"] == 0
    assert export["models"]["onnx-fp32"]["max_abs_diff_vs_torch"] <= 1e-4
    assert export["frontend"]["tflite"]["max_abs_diff_vs_training_features"] < 1e-3
    from edgenas.export.frontend import DEFAULT_IMPL

    for fmt in ("onnx", "tflite"):  # the fastest implementation per format shipped, and it says so
        assert export["frontend"][fmt]["impl"] == DEFAULT_IMPL[fmt]
        assert abs(export["frontend"][fmt]["raw_input_vs_torch_points"]) <= 0.5
    report = (path / "report.md").read_text()
    assert "## Budgets (as measured)" in report and "--max-ram-kb" in report and "--max-latency-ms" in report
    assert m["arch_hash"] in report


def test_resume_of_a_finished_run_is_a_noop(finished_run, cli) -> None:
    state_before = (finished_run.path / "state.json").read_text()
    onnx_mtime = (finished_run.path / "export/model.int8.onnx").stat().st_mtime_ns
    res = cli(["search", "--runs-dir", str(finished_run.runs_dir), "--name", finished_run.name, "--resume",
               "--json"])
    assert res.code == 0, res.err
    assert res.json() == finished_run.result.json()
    assert (finished_run.path / "state.json").read_text() == state_before
    assert (finished_run.path / "export/model.int8.onnx").stat().st_mtime_ns == onnx_mtime
    assert "already done, skipped" in res.err


def test_human_summary(finished_run, cli) -> None:
    """Without --json the resumed finished run prints its summary (accuracies that were not
    measured, e.g. before-QAT when QAT is off, are left out, not a traceback)."""
    res = cli(["search", "--runs-dir", str(finished_run.runs_dir), "--name", finished_run.name, "--resume"])
    assert res.code == 0, res.err
    m = finished_run.result.json()
    assert m["accuracy"]["test_fp32_torch_before_qat"] is None
    out = res.out
    assert f"run: {m['run_dir']}" in out and f"test accuracy: fp32 {m['accuracy']['test_fp32_torch']:.4f}" in out
    assert f"onnx int8 {m['accuracy']['test_onnx_int8']:.4f}" in out and "before qat" not in out
    b = m["budgets"]["latency"]
    assert (f"budget latency (p10, end-to-end): measured {b['measured']:.4g} ms = front end "
            f"{b['frontend']['measured']:.4g} + model {b['model']['measured']:.4g} ms vs 5 ms: holds") in out
    assert "latency on onnxruntime-cpu (median of the samples): front end " in out
    assert f"report: {m['run_dir']}/report.md" in out


def test_same_name_without_resume_is_refused(finished_run, cli) -> None:
    state_before = (finished_run.path / "state.json").read_text()
    res = cli(finished_run.argv)
    assert res.code != 0
    line = _one_error_line(res)
    assert "exists; pass --resume" in line and str(finished_run.path) in line
    assert res.out == ""
    assert (finished_run.path / "state.json").read_text() == state_before


def test_resume_with_other_options_is_refused(finished_run, cli) -> None:
    res = cli(["search", "--runs-dir", str(finished_run.runs_dir), "--name", finished_run.name, "--resume",
               "--epochs", "5"])
    assert res.code == 2
    assert "drop the other options" in _one_error_line(res)


def test_interrupted_run_resumes(tone_fsdd: Path, tmp_path: Path, cli, tiny_sets, monkeypatch) -> None:
    from edgenas import pipeline

    runs = tmp_path / "runs"
    argv = ["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--search-epochs", "1", "--epochs", "1",
            "--max-ram-kb", "512", "--runs-dir", str(runs), "--name", "intr", "--quiet", *tiny_sets]

    def interrupted(self, spec):  # Ctrl-C while exporting (fault injection)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline.Pipeline, "_stage_export", interrupted)
        res = cli(argv)
    assert res.code == 130
    line = _one_error_line(res)
    assert "--resume" in line
    run = runs / "kws" / "intr"
    state = json.loads((run / "state.json").read_text())
    assert set(state["stages"]) == {"config", "data", "budgets", "search", "derive", "train"}
    assert not (run / "export/model.fp32.onnx").exists() and not (run / "metrics.json").exists()

    res = cli(["search", "--runs-dir", str(runs), "--name", "intr", "--resume", "--json"])
    assert res.code == 0, res.err
    m = res.json()
    assert m["budgets"]["ram"]["holds"] in (True, False) and m["latency_ms"]["int8_median"] > 0
    for name in ARTIFACTS:
        assert (run / name).is_file(), name
    ev = _events(run)
    starts = [e["stage"] for e in ev if e["event"] == "stage.start"]
    assert starts.count("train") == 1 and starts.count("search") == 1 and starts.count("export") == 2
    skipped = [e["stage"] for e in ev if e["event"] == "stage.skip"]
    assert skipped == ["config", "data", "budgets", "search", "derive", "train"]


# ---- user errors: one line, non-zero exit, no traceback -----------------------------------------

def _cheapest_latency(run_dir: Path, store: Path, cache: Path) -> float:
    """The cheapest end-to-end latency: model (latency table) + the front end of its data
    configuration (the front-end table, whose measurements the run left in the store)."""
    from edgenas import config as C
    from edgenas.devices.frontend_cost import build_frontend_table
    from edgenas.devices.latency_table import load_latency_table
    from edgenas.devices.registry import get_device
    from edgenas.spaces.kws_dscnn import KWSDSCNNSpace
    from edgenas.store import Store

    cfg = C.from_dict(json.loads((run_dir / "config.json").read_text()))
    space = KWSDSCNNSpace(10, cfg.space, max_sample_rate=8000)
    from edgenas.devices.latency_model import MeasuredLatency

    dev = get_device("onnxruntime-cpu")
    with Store(store) as st:  # the run measured every cheapest candidate; the store returns those figures
        table = load_latency_table(dev, st, "onnx-int8")
        lat = MeasuredLatency(space, dev, st, table, "onnx-int8", runs=cfg.measure.chain_runs,
                            statistic="p10")  # the onnxruntime-cpu profile budgets p10
        fe = build_frontend_table(dev, st, space.data_configs(), cache, stat="p10")
        assert fe.measured == 0  # every front end was measured by the run and is read from the store
        return min(lat.cost(s) + fe.get(s.data).latency_ms for s in space.cheapest_candidates())


def test_infeasible_latency_budget(tone_fsdd: Path, tmp_path: Path, cli, tiny_sets, shared_env) -> None:
    runs = tmp_path / "runs"
    res = cli(["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--max-latency-ms", "0.00001",
               "--runs-dir", str(runs), "--name", "inf", "--quiet", *tiny_sets])
    assert res.code == 3
    line = _one_error_line(res)
    assert "infeasible budget: --max-latency-ms 1e-05" in line
    found = re.search(r"the cheapest spec reaches ([0-9.e+-]+) ms", line)
    assert found, line
    cheapest = _cheapest_latency(runs / "kws" / "inf", shared_env["EDGENAS_STORE"], shared_env["EDGENAS_CACHE"])
    assert found.group(1) == f"{cheapest:.4g}"
    assert float(found.group(1)) > 1e-5
    assert res.out == ""


def test_infeasible_budget_in_a_real_process(tone_fsdd: Path, tmp_path: Path, tiny_sets) -> None:
    argv = [sys.executable, "-m", "edgenas.cli", "search", "--data", str(tone_fsdd), "--test-speakers", "s2",
            "--max-latency-ms", "0.00001", "--runs-dir", str(tmp_path / "runs"), "--name", "inf", "--quiet",
            *tiny_sets]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=dict(os.environ),
                       cwd=tmp_path)
    assert p.returncode == 3, p.stderr[-2000:]
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("edgenas: error: infeasible budget: --max-latency-ms 1e-05")
    assert "the cheapest spec reaches" in lines[0] and "Traceback" not in p.stderr
    assert p.stdout == ""


def test_corrupt_wav_names_the_file(make_fsdd, tmp_path: Path, cli, tiny_sets) -> None:
    root = make_fsdd(tmp_path / "bad", digits=(0, 1), clips=2)
    bad = root / "recordings" / "1_s0_1.wav"  # a training clip
    bad.write_bytes(b"RIFF\x00\x00garbage, not audio" * 10)
    res = cli(["search", "--data", str(root), "--test-speakers", "s2", "--runs-dir", str(tmp_path / "runs"),
               "--name", "bad", "--quiet", *tiny_sets])
    assert res.code == 2
    line = _one_error_line(res)
    assert str(bad) in line and "cannot decode audio file" in line


def test_missing_dataset_path(tmp_path: Path, cli) -> None:
    res = cli(["search", "--data", str(tmp_path / "nowhere"), "--runs-dir", str(tmp_path / "runs"), "--quiet"])
    assert res.code == 2
    line = _one_error_line(res)
    assert "does not exist" in line and str(tmp_path / "nowhere") in line
    assert not (tmp_path / "runs").exists()  # nothing created for a run that cannot start


def test_unknown_set_key_suggests(tmp_path: Path, cli) -> None:
    res = cli(["search", "--runs-dir", str(tmp_path), "--set", "space.widht=8,16", "--quiet"])
    assert res.code == 2
    line = _one_error_line(res)
    assert "unknown config key 'space.widht'" in line and "did you mean widths" in line


def test_bad_set_value(tmp_path: Path, cli) -> None:
    res = cli(["search", "--runs-dir", str(tmp_path), "--set", "search.epochs=many", "--quiet"])
    assert res.code == 2
    assert "invalid value 'many' for search.epochs" in _one_error_line(res)


def test_resume_without_name(tmp_path: Path, cli) -> None:
    res = cli(["search", "--runs-dir", str(tmp_path), "--resume"])
    assert res.code == 2
    assert "--resume needs --name" in _one_error_line(res)


def test_resume_of_an_unknown_run(tmp_path: Path, cli) -> None:
    res = cli(["search", "--runs-dir", str(tmp_path), "--resume", "--name", "ghost"])
    assert res.code == 2
    assert "cannot resume: no run at" in _one_error_line(res)


def test_unknown_strategy(tmp_path: Path, cli) -> None:
    res = cli(["search", "--runs-dir", str(tmp_path), "--strategy", "dartz", "--quiet"])
    assert res.code == 2
    line = _one_error_line(res)
    assert "unknown strategy 'dartz'" in line and "did you mean darts" in line


def test_non_positive_budget(tmp_path: Path, cli) -> None:
    res = cli(["search", "--runs-dir", str(tmp_path), "--max-ram-kb", "0", "--quiet"])
    assert res.code == 2
    assert "--max-ram-kb must be positive" in _one_error_line(res)


# ---- help and devices --------------------------------------------------------------------------

def test_help(capsys) -> None:
    from edgenas.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "search" in out and "devices" in out and "examples" in out


def test_search_help_has_examples(capsys) -> None:
    from edgenas.cli import main

    with pytest.raises(SystemExit) as ei:
        main(["search", "--help"])
    assert ei.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "edgenas search --name sc12 --resume" in out
    for flag in ("--max-latency-ms", "--max-ram-kb", "--max-flash-kb", "--set", "--resume", "--test-speakers"):
        assert flag in out


def test_no_command_prints_help(cli) -> None:
    res = cli([])
    assert res.code == 2 and "usage: edgenas" in res.out


def test_devices_lists_onnxruntime_cpu(cli) -> None:
    import onnxruntime as ort

    res = cli(["devices"])
    assert res.code == 0
    line = next(x for x in res.out.splitlines() if x.startswith("onnxruntime-cpu"))
    assert "onnxruntime" in line and "threads=1" in line and "built-in" in line
    rows = cli(["devices", "list", "--json"]).json()
    row = next(r for r in rows if r["name"] == "onnxruntime-cpu")
    assert row["artifact_format"] == "onnx" and row["adapter"] == "onnxruntime-cpu"
    checked = cli(["devices", "check", "onnxruntime-cpu", "--json"]).json()
    assert checked["ok"] is True and checked["runtime_version"] == ort.__version__


def test_devices_check_unreachable_board_is_one_line(cli) -> None:
    res = cli(["devices", "check", "rpi4"])  # the built-in rpi4 profile names a host alias that does not resolve
    assert res.code != 0 and res.out == ""
    line = _one_error_line(res)
    assert "rpi4" in line and "unreachable" in line


def test_search_on_an_unreachable_board_fails_before_any_data_work(tone_fsdd: Path, tmp_path: Path, cli,
                                                                   tiny_sets) -> None:
    runs = tmp_path / "runs"
    res = cli(["search", "--device", "rpi4", "--data", str(tone_fsdd), "--test-speakers", "s2",
               "--max-latency-ms", "5", "--runs-dir", str(runs), "--name", "far", "--quiet", *tiny_sets])
    assert res.code != 0 and res.out == ""
    line = _one_error_line(res)
    assert "rpi4" in line and "unreachable" in line
    started = [e["stage"] for e in _events(runs / "kws" / "far") if e["event"] == "stage.start"]
    assert started == ["config"]  # no features computed, nothing measured


def test_console_script_is_installed() -> None:
    exe = shutil.which("edgenas") or str(Path(sys.executable).parent / "edgenas")
    p = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.strip().startswith("edgenas ")


def test_budget_scope_model_budgets_the_classifier_alone(tone_fsdd: Path, tmp_path: Path, cli, tiny_sets,
                                                         shared_env) -> None:
    """`--budget-scope model` keeps the model-only meaning: a 64 KiB RAM budget that no front end
    fits end to end is feasible for the classifier, and no front end is priced."""
    runs = tmp_path / "runs"
    res = cli(["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--search-epochs", "1", "--epochs", "1",
               "--max-ram-kb", "64", "--max-latency-ms", "5", "--budget-scope", "model", "--runs-dir", str(runs),
               "--name", "ms", "--json", "--quiet", *tiny_sets])
    assert res.code == 0, res.err[-2000:]
    m = res.json()
    assert m["budget_scope"] == "model"
    for b in m["budgets"].values():
        assert b["scope"] == "model" and b["artifact"] == "model.int8.onnx"
        # the shipped front end is still measured and shown, but not counted
        assert b["measured"] == b["model"]["measured"] and b["frontend"]["measured"] > 0
    assert m["budgets"]["ram"]["measured"] == m["ram_bytes"]["int8_graph"] <= 64 * 1024
    assert m["budgets"]["latency"]["measured"] == m["latency_ms"]["budgeted"]
    assert not [e for e in _events(runs / "kws" / "ms") if e["event"].startswith("frontend_table")]
    # the same budget end to end cannot be met: the front end's float buffers alone exceed it
    res = cli(["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--max-ram-kb", "64",
               "--runs-dir", str(runs), "--name", "e2", "--quiet", *tiny_sets])
    assert res.code == 3 and "--max-ram-kb 64 cannot be met" in _one_error_line(res)


def test_a_tight_ram_budget_ships_the_low_memory_front_end(tone_fsdd: Path, tmp_path: Path, cli, tiny_sets,
                                                           shared_env) -> None:
    """At 150 KiB end to end the fast 8 kHz front end (~208 KiB of float buffers) cannot fit; its
    low-memory implementation (~90 KiB) can: the search prices it, the export ships it, and the
    measured total holds."""
    runs = tmp_path / "runs"
    res = cli(["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--search-epochs", "1", "--epochs", "1",
               "--max-ram-kb", "150", "--runs-dir", str(runs), "--name", "lm", "--json", "--quiet", *tiny_sets])
    assert res.code == 0, res.err[-2000:]
    m = res.json()
    assert m["frontend_impl"] == "fft2-lowmem"
    ram = m["budgets"]["ram"]
    assert ram["holds"] and ram["frontend"]["measured"] == ram["frontend"]["estimated"] < 150 * 1024
    state = json.loads((runs / "kws" / "lm" / "state.json").read_text())["stages"]
    table = state["budgets"]["result"]["frontends"]
    key = next(iter(table["entries"]))
    assert table["entries"][key]["impl"] == "fft2-lowmem"
    assert {o["impl"] for o in table["options"][key]} == {"fft2", "fft2-lowmem"}
    export = json.loads((runs / "kws" / "lm" / "export" / "report.json").read_text())
    assert {export["frontend"][f]["impl"] for f in ("onnx", "tflite")} == {"fft2-lowmem"}
    assert abs(export["frontend"]["onnx"]["raw_input_vs_torch_points"]) <= 0.5
