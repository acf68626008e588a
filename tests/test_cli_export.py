"""`edgenas export` on a finished run, and its one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def _copy(finished_run, tmp_path: Path) -> Path:
    dst = tmp_path / "runs" / "kws" / "copy"
    shutil.copytree(finished_run.path, dst)
    return dst


def test_export_tflite_int8(finished_run, cli, tmp_path: Path, shared_env) -> None:
    run = _copy(finished_run, tmp_path)
    shutil.rmtree(run / "export")
    res = cli(["export", str(run), "--format", "tflite", "--quant", "int8", "--json", "--quiet"])
    assert res.code == 0, res.err
    rep = res.json()
    assert set(rep["models"]) == {"tflite-int8"} and rep["shipped"] == ["model.int8.tflite"]
    r = rep["models"]["tflite-int8"]
    assert r["status"] == "ok" and r["verification"]["fully_int8"] and r["transpose_ops"] == 0
    assert r["verification"]["inputs"][0]["dtype"] == "int8" and r["tflm"].startswith("TFLM-compatible")
    assert (run / "export" / "model.int8.tflite").is_file() and not (run / "export" / "model.fp32.onnx").exists()
    assert json.loads((run / "export" / "report.json").read_text())["shipped"] == ["model.int8.tflite"]
    assert "model.int8.tflite" in (run / "export" / "report.md").read_text()


def test_export_all_prints_each_file(finished_run, cli, tmp_path: Path, shared_env) -> None:
    run = _copy(finished_run, tmp_path)
    res = cli(["export", str(run), "--format", "all", "--quiet"])
    assert res.code == 0, res.err
    for name in ("model.fp32.onnx", "model.int8.onnx", "model.fp32.tflite", "model.int8.tflite", "frontend.fp32.onnx",
                 "frontend.fp32.tflite"):
        assert f"{name}: ok" in res.out, name
    assert "bundle:" in res.out


def test_export_errors_are_one_line(finished_run, cli, tmp_path: Path, shared_env) -> None:
    run = _copy(finished_run, tmp_path)
    (run / "model.pt").write_bytes(b"\x00corrupt" * 100)
    res = cli(["export", str(run)])
    assert res.code != 0 and len(res.err_lines()) == 1 and "cannot load" in res.err, res.err
    (run / "model.pt").unlink()
    res = cli(["export", str(run)])
    assert res.code != 0 and len(res.err_lines()) == 1 and "no trained model" in res.err
    res = cli(["export", str(tmp_path / "nope")])
    assert res.code != 0 and len(res.err_lines()) == 1 and "not an edgenas run directory" in res.err
    res = cli(["export", str(run), "--format", "coreml"])
    assert res.code != 0 and len(res.err_lines()) == 1 and "unknown --format" in res.err
