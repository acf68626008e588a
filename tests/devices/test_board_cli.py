"""The stand-in SSH board through the command line: calibrate, search with its predictor, deploy.

The board is Debian's sshd on 127.0.0.1 (sshd_fixture.py) whose Python is this venv, so its
runtimes are the real ONNX Runtime and LiteRT; every measurement crosses a real SSH connection.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sshd_fixture import StandInBoard


@pytest.fixture
def board_profile(ssh_board: StandInBoard, tmp_path: Path, isolated_home: Path) -> Path:
    return ssh_board.profile(name="standin", runtime="onnxruntime", path=tmp_path / "standin.toml")


def test_calibrate_and_search_on_the_board(board_profile: Path, tone_fsdd: Path, tmp_path: Path, cli, tiny_sets,
                                           isolated_env, one_thread_per_module) -> None:
    space = [a for pair in zip(tiny_sets[::2], tiny_sets[1::2]) if pair[1].startswith("space.") for a in pair]
    res = cli(["calibrate", "--device", str(board_profile), "--samples", "12", "--runs", "5", *space, "--json",
               "--quiet"])
    assert res.code == 0, res.err
    rep = res.json()
    assert rep["device"] == "standin" and rep["samples"] == 12 and rep["fmt"] == "onnx-int8"
    assert Path(rep["predictor"]).parent.name == "standin"
    # the front end of every data configuration is measured on the board; the error is for the total
    assert rep["frontends"]["fmt"] == "onnx" and all(v > 0 for v in rep["frontends"]["table_ms"].values())
    assert rep["holdout_errors_end_to_end"]["learned"]["n"] == rep["holdout"]
    res = cli(["search", "--device", str(board_profile), "--data", str(tone_fsdd), "--test-speakers", "s2",
               "--search-epochs", "1", "--epochs", "1", "--max-latency-ms", "5", "--runs-dir", str(tmp_path / "runs"),
               "--name", "b", "--json", *tiny_sets])
    assert res.code == 0, res.err[-2000:]
    m = res.json()
    assert m["device"] == str(board_profile) and m["latency_ms"]["predicted_by"] == "learned"
    lat = json.loads((tmp_path / "runs/kws/b/state.json").read_text())["stages"]["measure"]["result"]["int8"]["latency"]
    assert lat["device"] == "standin" and "ssh_target" in lat["device_identity"]
    state = json.loads((tmp_path / "runs/kws/b/state.json").read_text())["stages"]
    fe_table = state["budgets"]["result"]["frontends"]
    assert fe_table["device"] == "standin" and fe_table["measured_now"] == 0  # calibration measured it already
    fe = state["measure"]["result"]["frontend"]["latency"]
    assert fe["device"] == "standin" and "ssh_target" in fe["device_identity"]  # the shipped front end, on the board
    b = m["budgets"]["latency"]
    assert b["scope"] == "end-to-end" and b["measured"] == pytest.approx(b["frontend"]["measured"] + b["model"]["measured"])


def test_deploy_a_finished_run(board_profile: Path, finished_run, cli, tmp_path: Path) -> None:
    res = cli(["deploy", str(finished_run.path), "--device", str(board_profile), "--bench-runs", "10", "--json",
               "--quiet"])
    assert res.code == 0, res.err
    out = res.json()
    labels = (finished_run.path / "bundle" / "labels.txt").read_text().split()
    assert out["label"] in labels and 0 < out["score"] <= 1
    e2e = out["end_to_end_ms"]
    assert 0 < e2e["frontend_median"] <= e2e["median"] and 0 < e2e["model_median"] <= e2e["median"]
    res = cli(["deploy", str(finished_run.path), "--device", str(board_profile), "--bench-runs", "5", "--quiet"])
    assert res.code == 0, res.err
    line = res.out.strip().splitlines()[-1]
    assert line.startswith("latency on standin over 5 runs: front end ") and " ms + model " in line
    assert "total (front end + model) median " in line


def test_deploy_errors_are_one_line(board_profile: Path, finished_run, cli, tmp_path: Path) -> None:
    res = cli(["deploy", str(tmp_path), "--device", str(board_profile)])
    assert res.code != 0 and len(res.err_lines()) == 1 and "no deployment bundle" in res.err
    res = cli(["deploy", str(finished_run.path), "--device", "onnxruntime-cpu"])
    assert res.code != 0 and len(res.err_lines()) == 1 and "SSH board" in res.err
    broken = tmp_path / "run"
    shutil.copytree(finished_run.path / "bundle", broken / "bundle")
    for f in (broken / "bundle").glob("model.int8.*"):
        f.write_bytes(b"not a model" * 10)
    res = cli(["deploy", str(broken), "--device", str(board_profile), "--quiet"])
    assert res.code != 0 and len(res.err_lines()) == 1 and "Traceback" not in res.err, res.err
