"""Deploying a bundle to the stand-in SSH board (sshd on 127.0.0.1, see sshd_fixture.py).

The bundle is the tiny int8 ONNX classifier of tests/export/test_bundle.py (ridge regression on
real FSDD clips; that module's ``build_inputs`` is loaded by path) with the ONNX front end. The
board's python is this interpreter, so infer.py run locally on the same clip is the reference.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sshd_fixture import StandInBoard, board_device, free_port, wrapper

from edgenas.devices.registry import get_device
from edgenas.errors import DeviceError, ExportError


def _bundle_tests() -> ModuleType:
    folder = Path(__file__).resolve().parents[1] / "export"
    if str(folder) not in sys.path:  # test_bundle.py imports its folder's helpers (export_toys)
        sys.path.append(str(folder))
    path = folder / "test_bundle.py"
    spec = importlib.util.spec_from_file_location("edgenas_tests_bundle_helpers", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


TB = _bundle_tests()
pytestmark = pytest.mark.skipif(not TB.FSDD.is_dir(), reason="shared sample data (FSDD) not present")


@pytest.fixture(autouse=True)
def _isolated(isolated_home: Path) -> Path:  # tests/devices/conftest.py
    return isolated_home


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """make_bundle output folder (``out``), its result (``res``) and the expected labels."""
    from edgenas.export.bundle import make_bundle

    inputs = TB.build_inputs(tmp_path_factory.mktemp("inputs"), tflite=False)
    out = tmp_path_factory.mktemp("out")
    res = make_bundle(out, models=inputs["models"], frontends=inputs["frontends"], labels=inputs["labels"],
                      spec=inputs["spec"], metadata={}, sample=TB.CLIPS[0])
    return {"out": out, "res": res, "expected": inputs["expected"], "dir": Path(res["bundle_dir"])}


def local_infer(bundle_dir: Path, clip: Path) -> dict[str, Any]:
    res = subprocess.run([sys.executable, str(bundle_dir / "infer.py"), "--json", str(clip)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def one_line(e: pytest.ExceptionInfo[BaseException]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and msg
    return msg


def test_deploy_matches_local_infer(ssh_board: StandInBoard, tmp_path: Path, bundle: dict[str, Any]) -> None:
    from edgenas.devices.deploy import deploy_bundle

    clip = TB.CLIPS[1]
    ref = local_infer(bundle["dir"], clip)
    events: list[tuple[str, dict[str, Any]]] = []
    with board_device(ssh_board, tmp_path) as dev:
        t0 = time.perf_counter()
        res = deploy_bundle(dev, bundle["dir"], wav=clip, bench_runs=20,
                            sink=lambda ev, **f: events.append((ev, f)))
        first_s = time.perf_counter() - t0
        assert res["label"] == ref["label"] == bundle["expected"][1]
        assert res["score"] == pytest.approx(ref["score"], abs=1e-6) and res["scores"] == pytest.approx(ref["scores"])
        assert res["runtime"]["model"] == ref["runtime"]["model"] and "model.int8.onnx" in res["runtime"]["model"]
        assert res["formats"] == {"front end": "onnx", "classifier": "onnx"}
        e2e = res["end_to_end_ms"]
        assert e2e["runs"] == 20 and 0 < e2e["median"] <= e2e["p90"] < 1000
        # the two stages timed apart in the same runs: each median is at most the total's
        assert 0 < e2e["frontend_median"] <= e2e["median"] and 0 < e2e["model_median"] <= e2e["median"]
        arch = bundle["res"]["arch_hash"]
        remote = ssh_board.root / "work" / "bundles" / arch
        assert res["remote_dir"] == str(remote) and res["arch_hash"] == arch
        assert {f["name"] for f in bundle["res"]["files"]} <= {p.name for p in remote.iterdir()}
        assert sorted(res["uploaded"]) == sorted(f["name"] for f in bundle["res"]["files"]) and res["skipped"] == []
        assert res["clip"].startswith(str(ssh_board.root / "work" / "clips"))
        assert [ev for ev, _ in events] == ["deploy.upload", "deploy.run"]
        assert res["board"]["executable"] and res["board"]["identity"]["ssh_target"].endswith(f":{ssh_board.port}")
        # again, on the bundle's sample.wav, through the make_bundle output folder: nothing re-uploaded
        client = dev.connect()
        t0 = time.perf_counter()
        again = deploy_bundle(dev, bundle["out"], bench_runs=5)
        second_s = time.perf_counter() - t0
        assert dev.connect() is client  # one reused connection
        assert again["uploaded"] == [] and len(again["skipped"]) == len(bundle["res"]["files"])
        assert again["label"] == bundle["expected"][0] == local_infer(bundle["dir"], TB.CLIPS[0])["label"]
        assert again["clip_source"] == "bundle sample.wav"
    print(f"\ndeploy wall time on the stand-in board: first {first_s:.2f} s (upload {res['upload_s']:.2f} s,"
          f" infer.py {res['exec_s']:.2f} s), again {second_s:.2f} s; end-to-end median {e2e['median']:.3f} ms")


def test_deploy_by_profile_path_forced_runtime_and_changed_file(ssh_board: StandInBoard, tmp_path: Path,
                                                                bundle: dict[str, Any]) -> None:
    """A profile path as the device; a changed bundle file of the same size is uploaded again."""
    import shutil

    from edgenas.devices.deploy import deploy_bundle

    copy = tmp_path / "bundle"
    shutil.copytree(bundle["dir"], copy)
    profile = ssh_board.profile(path=tmp_path / "p.toml", workdir=str(tmp_path / "work2"))
    res = deploy_bundle(str(profile), copy, bench_runs=0, runtime="onnx")
    assert res["end_to_end_ms"] is None and res["label"] == bundle["expected"][0]
    labels = (copy / "labels.txt").read_text()
    (copy / "labels.txt").write_text(labels.replace("zero", "nil!"))  # same size, other content
    again = deploy_bundle(str(profile), copy, bench_runs=0)
    assert again["uploaded"] == ["labels.txt"]
    assert (Path(again["remote_dir"]) / "labels.txt").read_text() == (copy / "labels.txt").read_text()


def test_board_without_runtime(ssh_board: StandInBoard, tmp_path: Path, bundle: dict[str, Any]) -> None:
    from edgenas.devices.deploy import deploy_bundle

    # numpy but no runtime: this interpreter without site-packages, numpy alone on PYTHONPATH
    site = Path(__import__("numpy").__file__).resolve().parents[1]
    only = tmp_path / "only-numpy"
    only.mkdir()
    for p in site.glob("numpy*"):
        (only / p.name).symlink_to(p)
    no_rt = wrapper(tmp_path, "numpy-only-python",
                    f"PYTHONPATH={shlex.quote(str(only))} exec {shlex.quote(sys.executable)} -S \"$@\"")
    with board_device(ssh_board, tmp_path, python=str(no_rt)) as dev:
        with pytest.raises(DeviceError, match="missing runtime on the board: .* install onnxruntime there") as e:
            deploy_bundle(dev, bundle["dir"])
        assert "classifier is .onnx" in one_line(e) or "front end is .onnx" in one_line(e)
    bare = wrapper(tmp_path, "bare-python", f"exec {shlex.quote(sys.executable)} -S \"$@\"")
    with board_device(ssh_board, tmp_path, python=str(bare)) as dev:
        with pytest.raises(DeviceError, match="missing runtime on the board: .* has no numpy") as e:
            deploy_bundle(dev, bundle["dir"])
        one_line(e)
    with board_device(ssh_board, tmp_path) as dev:  # the board has onnxruntime, the bundle no .tflite
        with pytest.raises(DeviceError, match="the bundle has no .tflite front end") as e:
            deploy_bundle(dev, bundle["dir"], runtime="tflite")


def test_infer_failure_and_timeout(ssh_board: StandInBoard, tmp_path: Path, bundle: dict[str, Any]) -> None:
    from edgenas.devices.deploy import deploy_bundle

    bad = tmp_path / "bad.wav"
    bad.write_text("this is not a wav file\n")
    with board_device(ssh_board, tmp_path) as dev:
        with pytest.raises(DeviceError, match=r"infer.py failed on the board \(exit 2\): cannot read WAV") as e:
            deploy_bundle(dev, bundle["dir"], wav=bad)
        one_line(e)
    hang = wrapper(tmp_path, "hang-python",
                   f"case \"$*\" in *--probe*) exec {shlex.quote(sys.executable)} \"$@\";; esac\nexec sleep 30")
    with board_device(ssh_board, tmp_path, python=str(hang), timeout_s=2) as dev:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="infer.py timed out after 2 s") as e:
            deploy_bundle(dev, bundle["dir"])
        one_line(e)
        assert time.monotonic() - t0 < 15


def test_local_device_and_unreachable_board(ssh_board: StandInBoard, tmp_path: Path, bundle: dict[str, Any]) -> None:
    from edgenas.devices.deploy import deploy_bundle

    with pytest.raises(DeviceError) as e:
        deploy_bundle(get_device("onnxruntime-cpu"), bundle["dir"])
    assert one_line(e) == "deploy needs an SSH board profile; onnxruntime-cpu is a local device"
    dev = board_device(ssh_board, tmp_path, port=free_port())
    with pytest.raises(DeviceError, match="unreachable.*refused") as e:
        deploy_bundle(dev, bundle["dir"])
    one_line(e)
    with pytest.raises(ExportError, match="not a bundle folder"):
        deploy_bundle(dev, tmp_path)
    no_sample = tmp_path / "nosample"
    import shutil

    shutil.copytree(bundle["dir"], no_sample)
    (no_sample / "sample.wav").unlink()
    with pytest.raises(DeviceError, match="no sample input; pass a WAV file"):
        deploy_bundle(dev, no_sample)


@pytest.mark.slow
def test_deploy_a_timeseries_bundle(ssh_board: StandInBoard, tmp_path: Path, cli) -> None:
    """A time-series search's bundle on the stand-in board: the bundle's CSV sample and a .ts line
    give the labels infer.py gives locally."""
    from edgenas.devices.deploy import deploy_bundle

    data = Path(__file__).resolve().parents[3] / "shared" / "data" / "ucr_uea_timeseries" / "GunPoint"
    if not data.is_dir():
        pytest.skip("../shared/data/ucr_uea_timeseries is missing")
    res = cli(["search", "--task", "timeseries", "--data", str(data), "--device", "onnxruntime-cpu", "--runs-dir",
               str(tmp_path / "runs"), "--name", "gp", "--quiet", "--set", "space.widths=8", "--set", "space.n_blocks=1",
               "--set", "train.epochs=5", "--set", "search.epochs=2"])
    assert res.code == 0, res.err
    bundle = tmp_path / "runs" / "timeseries" / "gp" / "bundle"
    line = (data / "GunPoint_TRAIN.ts").read_text().splitlines()[-1]
    case = tmp_path / "case.ts"
    case.write_text("@data\n" + line + "\n")
    with board_device(ssh_board, tmp_path) as dev:
        for clip in (None, case):
            got = deploy_bundle(dev, bundle, wav=clip, bench_runs=3)
            assert got["label"] == local_infer(bundle, clip or bundle / "sample.csv")["label"]
            assert got["end_to_end_ms"]["runs"] == 3
