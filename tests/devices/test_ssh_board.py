"""The SSH board adapter against a stand-in board: sshd on 127.0.0.1 (see sshd_fixture.py)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd_fixture import StandInBoard, board_device, free_port, keygen, wrapper

from edgenas.devices.base import Device, Measurement
from edgenas.devices.measure import measure_cached
from edgenas.devices.registry import check_device, get_device
from edgenas.devices.ssh_board import SSHBoard
from edgenas.errors import DeviceError
from edgenas.store import Store


@pytest.fixture(autouse=True)
def _isolated(isolated_home: Path) -> Path:  # tests/devices/conftest.py
    return isolated_home


def test_measure_onnx(ssh_board: StandInBoard, tmp_path: Path, small_onnx: Path) -> None:
    with board_device(ssh_board, tmp_path) as dev:
        assert isinstance(dev, Device) and dev.artifact_format == "onnx"
        import onnxruntime

        assert dev.runtime_version() == f"onnxruntime {onnxruntime.__version__}"
        m = dev.measure(small_onnx, runs=20, warmup=3)
        assert isinstance(m, Measurement) and len(m.samples_ms) == 20 and m.runs == 20 and m.warmup == 3
        assert 0 < m.median_ms <= m.p90_ms and m.median_ms < 50
        assert m.device == "standin" and m.runtime == "onnxruntime" and m.runtime_version == dev.runtime_version()
        ident = m.device_identity
        import socket

        assert ident["hostname"] == socket.gethostname() and ident["machine"] and ident["cpu"]
        assert ident["ssh_target"] == f"{ssh_board.user}@127.0.0.1:{ssh_board.port}"
        governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
        if governor.exists():
            assert ident["governor"] == governor.read_text().strip()
        client = dev.connect()
        m2 = dev.measure(small_onnx, runs=5, warmup=1, threads=2)
        assert m2.threads == 2 and dev.connect() is client  # one reused connection
        assert dev.last_timing["exec_s"] > 0
        with Store(tmp_path / "s.sqlite") as st:
            a = measure_cached(dev, st, small_onnx, fmt="onnx-fp32", runs=5, warmup=1)
            b = measure_cached(dev, st, small_onnx, fmt="onnx-fp32", runs=5, warmup=1)
            assert a == b and st.count() == 1
        runners = list((ssh_board.root / "work").glob("runner-*.py"))
        assert len(runners) == 1  # uploaded once, by content hash
        with pytest.raises(DeviceError, match="runs .onnx models"):
            dev.measure(_touch(tmp_path / "x.tflite"))


def _touch(path: Path) -> Path:
    path.write_bytes(b"x")
    return path


def test_measure_tflite_int8(ssh_board: StandInBoard, tmp_path: Path, tflite_models: dict[str, Path]) -> None:
    with board_device(ssh_board, tmp_path, runtime="litert") as dev:
        assert dev.artifact_format == "tflite" and dev.runtime_version().startswith("ai_edge_litert ")
        m = dev.measure(tflite_models["int8"], runs=20, warmup=3)
        assert 0 < m.median_ms < 50 and m.runtime == "litert" and m.runtime_version == dev.runtime_version()


def test_check_and_info(ssh_board: StandInBoard, tmp_path: Path) -> None:
    path = ssh_board.profile(path=tmp_path / "b.toml")
    row = check_device(str(path))
    assert row["ok"] and row["adapter"] == "ssh" and row["runtime_version"].startswith("onnxruntime ")
    info = row["info"]
    assert {"onnxruntime", "ai_edge_litert"} <= set(info["runtimes"])
    assert info["python"] == ".".join(map(str, sys.version_info[:3])) and info["numpy"]
    assert info["target"]["port"] == ssh_board.port and "governor" in info and "cur_freq_khz" in info


def test_refused_port(ssh_board: StandInBoard, tmp_path: Path) -> None:
    dev = board_device(ssh_board, tmp_path, port=free_port())
    with pytest.raises(DeviceError, match="unreachable.*refused") as e:
        dev.check()
    assert "\n" not in str(e.value)
    row = check_device(str(tmp_path / "board.toml"))
    assert row["ok"] is False and "unreachable" in row["error"]


def test_unresolvable_host(ssh_board: StandInBoard, tmp_path: Path) -> None:
    dev = board_device(ssh_board, tmp_path, host="no-such-host.invalid")
    with pytest.raises(DeviceError, match="unreachable: cannot resolve host"):
        dev.check()


def test_wrong_key(ssh_board: StandInBoard, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_key")
    with pytest.raises(DeviceError, match="authentication failed for root@127.0.0.1"):
        board_device(ssh_board, tmp_path, key=str(other)).check()
    with pytest.raises(DeviceError, match="key file not found"):
        board_device(ssh_board, tmp_path, key=str(tmp_path / "missing_key")).check()


def test_unknown_host_key_and_opt_in(ssh_board: StandInBoard, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(DeviceError, match=r"unknown host key for \[127.0.0.1\]:\d+ .*accept_unknown_host_key"):
        board_device(ssh_board, tmp_path, known_hosts=str(empty)).check()
    with board_device(ssh_board, tmp_path, known_hosts=str(empty), accept_unknown_host_key=True) as dev:
        dev.check()
    # a known_hosts entry with a different key for the same host: refused as a changed key
    other = keygen(tmp_path / "fake_host_key")
    kind, blob = (tmp_path / "fake_host_key.pub").read_text().split()[:2]
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{ssh_board.port} {kind} {blob}\n")
    assert other.exists()
    with pytest.raises(DeviceError, match="does NOT match known_hosts"):
        board_device(ssh_board, tmp_path, known_hosts=str(wrong), accept_unknown_host_key=True).check()


def test_ssh_config_alias(ssh_board: StandInBoard, tmp_path: Path, isolated_home: Path,
                          small_onnx: Path) -> None:
    ssh_dir = isolated_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(
        f"Host standin-alias\n  HostName 127.0.0.1\n  Port {ssh_board.port}\n  User {ssh_board.user}\n"
        f"  IdentityFile {ssh_board.client_key}\n")
    (ssh_dir / "known_hosts").write_text(ssh_board.host_key_line + "\n")  # ~/.ssh/known_hosts is read
    with board_device(ssh_board, tmp_path, host="standin-alias", port=None, user=None, key=None,
                      known_hosts=None) as dev:
        t = dev.target()
        assert (t["hostname"], t["port"], t["user"]) == ("127.0.0.1", ssh_board.port, ssh_board.user)
        assert dev.measure(small_onnx, runs=3, warmup=1).median_ms > 0


def test_missing_runtime(ssh_board: StandInBoard, tmp_path: Path, small_onnx: Path) -> None:
    # the same interpreter without site-packages: no numpy, no onnxruntime
    bare = wrapper(tmp_path, "bare-python", f"exec {shlex.quote(sys.executable)} -S \"$@\"")
    with board_device(ssh_board, tmp_path, python=str(bare)) as dev:
        with pytest.raises(DeviceError, match="missing runtime on the board: .* has no numpy"):
            dev.check()
        with pytest.raises(DeviceError, match="missing runtime"):
            dev.measure(small_onnx, runs=3)
        assert dev.probe()["runtimes"] == {}
    with pytest.raises(DeviceError, match="cannot start '/nonexistent/python3'"):
        board_device(ssh_board, tmp_path, python="/nonexistent/python3").check()


def test_runner_crash_and_bad_model(ssh_board: StandInBoard, tmp_path: Path, small_onnx: Path) -> None:
    crash = wrapper(tmp_path, "crash-python",
                    f"case \"$*\" in *--probe*) exec {shlex.quote(sys.executable)} \"$@\";; esac\n"
                    "echo 'Segmentation fault (core dumped)' >&2; exit 139")
    with board_device(ssh_board, tmp_path, python=str(crash)) as dev:
        with pytest.raises(DeviceError, match=r"runner crashed .*exit 139.*Segmentation fault"):
            dev.measure(small_onnx, runs=3)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with board_device(ssh_board, tmp_path) as dev:
        with pytest.raises(DeviceError, match="board cannot load the model"):
            dev.measure(bad, runs=3)


def test_timeout_leaves_no_process(ssh_board: StandInBoard, tmp_path: Path, small_onnx: Path) -> None:
    hang = wrapper(tmp_path, "hang-python", f"EDGENAS_RUNNER_TEST_HANG=1 exec {shlex.quote(sys.executable)} \"$@\"")
    workdir = tmp_path / "hang-work"
    with board_device(ssh_board, tmp_path, python=str(hang), timeout_s=2, workdir=str(workdir)) as dev:
        t0 = time.monotonic()
        with pytest.raises(DeviceError, match="timed out after 2 s"):
            dev.measure(small_onnx, runs=3)
        assert time.monotonic() - t0 < 15
    left = subprocess.run(["pgrep", "-f", f"{workdir}/runner-"], capture_output=True, text=True)
    assert left.returncode == 1, f"runner still running on the board: {left.stdout}"


def test_paths_are_quoted(ssh_board: StandInBoard, tmp_path: Path, small_onnx: Path) -> None:
    odd = tmp_path / "work dir 'q' $(touch pwned) ;x"
    with board_device(ssh_board, tmp_path, workdir=str(odd)) as dev:
        assert dev.measure(small_onnx, runs=3, warmup=1).median_ms > 0
        assert "'" in dev.command(["a b"], 5)
    import pwd

    remote_home = Path(pwd.getpwuid(os.getuid()).pw_dir)
    assert odd.is_dir() and not (remote_home / "pwned").exists() and not (odd / "pwned").exists()


def test_onnx_external_data_refused(ssh_board: StandInBoard, tmp_path: Path, small_onnx: Path) -> None:
    import onnx

    ext = tmp_path / "ext.onnx"
    onnx.save(onnx.load(str(small_onnx)), str(ext), save_as_external_data=True, size_threshold=0)
    with pytest.raises(DeviceError, match="external data"):
        board_device(ssh_board, tmp_path).measure(ext, runs=3)


# -- measure_many: many models per runner call ---------------------------------------------------


def onnx_models(folder: Path, sizes: list[tuple[int, int]], dense: tuple[int, ...] = ()) -> list[Path]:
    """One 3x3 conv ONNX model per (channels, height), named m0.onnx, m1.onnx, … (distinct files);
    depthwise except at the indexes in ``dense``."""
    import onnx

    from edgenas.export.micro import micro_model
    from edgenas.spec import LayerDesc

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, (c, h) in enumerate(sizes):
        groups = 1 if k in dense else c
        desc = LayerDesc(f"c{k}", "conv2d", (c, h, 5), (c, h, 5), (3, 3), (1, 1), (1, 1, 1, 1), groups, "relu")
        path = folder / f"m{k}.onnx"
        onnx.save(micro_model(desc, "onnx-fp32"), str(path))
        paths.append(path)
    return paths


def count_runner_calls(dev: SSHBoard, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the argument list of every runner call the device makes from now on."""
    calls: list[list[str]] = []
    real = dev._exec

    def counting(args: list[str], timeout_s: float, **kw: object) -> tuple[int, str, str]:
        calls.append(list(args))
        return real(args, timeout_s, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(dev, "_exec", counting)
    return calls


def test_measure_many_onnx_one_runner_call(ssh_board: StandInBoard, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from edgenas.devices.base import measure_many

    # the middle model is a dense conv with ~4000x the MACs of the others: its median shows the order
    paths = onnx_models(tmp_path / "models", [(8, 8), (64, 64), (8, 8)], dense=(1,))
    with board_device(ssh_board, tmp_path) as dev:
        dev.check()
        calls = count_runner_calls(dev, monkeypatch)
        seen: list[tuple[int, Measurement]] = []
        ms = measure_many(dev, paths, runs=10, warmup=2, threads=1, on_result=lambda i, m: seen.append((i, m)))
        assert len(ms) == 3 and all(isinstance(m, Measurement) for m in ms)
        assert [i for i, _ in seen] == [0, 1, 2] and [m for _, m in seen] == ms
        assert calls == [["--batch", "-"]] and dev.last_timing["runner_calls"] == 1
        assert dev.last_timing["models"] == 3 and dev.last_timing["exec_s"] > 0
        assert ms[1].median_ms > 3 * max(ms[0].median_ms, ms[2].median_ms)
        for m in ms:
            assert len(m.samples_ms) == 10 and m.runs == 10 and m.warmup == 2 and m.threads == 1
            assert m.device == "standin" and m.runtime == "onnxruntime" and m.runtime_version == dev.runtime_version()
            ident = m.device_identity
            assert ident["hostname"] == socket.gethostname() and ident["cpu"] and ident["python"]
            assert ident["ssh_target"] == f"{ssh_board.user}@127.0.0.1:{ssh_board.port}"
            governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
            if governor.exists():
                assert ident["governor"] == governor.read_text().strip()
        # chunks: batch_size 2 → two runner calls; files already on the board are not uploaded again
        uploaded = sorted((ssh_board.root / "work" / "models").iterdir())
        calls.clear()
        again = dev.measure_many(paths, runs=5, warmup=1, threads=2, batch_size=2)
        assert len(calls) == 2 and [m.threads for m in again] == [2, 2, 2]
        assert sorted((ssh_board.root / "work" / "models").iterdir()) == uploaded
        assert dev.measure_many([], runs=5) == []


def test_measure_many_tflite(ssh_board: StandInBoard, tmp_path: Path, tflite_models: dict[str, Path],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    with board_device(ssh_board, tmp_path, runtime="litert") as dev:
        dev.check()
        calls = count_runner_calls(dev, monkeypatch)
        ms = dev.measure_many([tflite_models["fp32"], tflite_models["int8"]], runs=10, warmup=2)
        assert len(calls) == 1 and len(ms) == 2
        assert all(m.runtime == "litert" and 0 < m.median_ms < 50 for m in ms)
        assert all(m.runtime_version == dev.runtime_version() for m in ms)


def test_measure_many_corrupt_model_in_the_middle(ssh_board: StandInBoard, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from edgenas.devices.base import MeasureManyError

    good = onnx_models(tmp_path / "models", [(8, 8), (12, 8)])
    bad = tmp_path / "models" / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with board_device(ssh_board, tmp_path) as dev:
        dev.check()
        calls = count_runner_calls(dev, monkeypatch)
        seen: list[int] = []
        with pytest.raises(MeasureManyError, match="board cannot load the model bad.onnx") as e:
            dev.measure_many([good[0], bad, good[1]], runs=5, warmup=1, on_result=lambda i, m: seen.append(i))
        assert "\n" not in str(e.value) and isinstance(e.value, DeviceError)
        assert sorted(e.value.partial) == [0, 2] and seen == [0, 2] and list(e.value.errors) == [1]
        assert all(m.median_ms > 0 for m in e.value.partial.values())
        assert len(calls) == 1  # the batch went on past the bad model


def test_measure_many_hang_midway_keeps_finished(ssh_board: StandInBoard, tmp_path: Path) -> None:
    from edgenas.devices.base import MeasureManyError

    paths = onnx_models(tmp_path / "models", [(8, 8), (12, 8), (16, 8), (20, 8)])
    hang = wrapper(tmp_path, "hang-python",
                   f"EDGENAS_RUNNER_TEST_HANG_AT=1 exec {shlex.quote(sys.executable)} \"$@\"")
    workdir = tmp_path / "hang-work"
    with board_device(ssh_board, tmp_path, python=str(hang), timeout_s=3, workdir=str(workdir)) as dev:
        seen: list[int] = []
        t0 = time.monotonic()
        with pytest.raises(MeasureManyError, match="timed out after 3 s .* measuring m1.onnx") as e:
            dev.measure_many(paths, runs=5, warmup=1, on_result=lambda i, m: seen.append(i))
        assert time.monotonic() - t0 < 11  # the per-model watchdog (3 s), not the batch limit (12 s)
        assert "\n" not in str(e.value)
        assert list(e.value.partial) == [0] and seen == [0] and list(e.value.errors) == [1]
    # resume with the models not finished: the same board without the hang measures them
    left = subprocess.run(["pgrep", "-f", f"{workdir}/runner-"], capture_output=True, text=True)
    assert left.returncode == 1, f"runner still running on the board: {left.stdout}"
    with board_device(ssh_board, tmp_path) as dev:
        rest = [p for i, p in enumerate(paths) if i not in e.value.partial]
        assert len(dev.measure_many(rest, runs=5, warmup=1)) == 3


def test_measure_many_crash_midway(ssh_board: StandInBoard, tmp_path: Path) -> None:
    from edgenas.devices.base import MeasureManyError

    paths = onnx_models(tmp_path / "models", [(8, 8), (12, 8), (16, 8)])
    crash = wrapper(tmp_path, "crash-python",
                    f"EDGENAS_RUNNER_TEST_CRASH_AT=1 exec {shlex.quote(sys.executable)} \"$@\"")
    with board_device(ssh_board, tmp_path, python=str(crash)) as dev:
        with pytest.raises(MeasureManyError,
                           match=r"runner crashed during measurement of m1.onnx .*killed by a signal.*Segmentation"
                           ) as e:
            dev.measure_many(paths, runs=5, warmup=1)
        assert list(e.value.partial) == [0] and list(e.value.errors) == [1]


def test_measure_many_checks_every_file_before_uploading(ssh_board: StandInBoard, tmp_path: Path) -> None:
    paths = onnx_models(tmp_path / "models", [(8, 8)])
    with board_device(ssh_board, tmp_path, workdir=str(tmp_path / "w")) as dev:
        with pytest.raises(DeviceError, match="model file not found: .*missing.onnx"):
            dev.measure_many([paths[0], tmp_path / "missing.onnx"], runs=3)
        with pytest.raises(DeviceError, match="runs .onnx models"):
            dev.measure_many([paths[0], _touch(tmp_path / "x.tflite")], runs=3)
        assert not (tmp_path / "w").exists()  # nothing was uploaded


def test_batch_timeout_scales_and_is_capped(ssh_board: StandInBoard, tmp_path: Path) -> None:
    from edgenas.devices.ssh_board import BATCH_TIMEOUT_CAP_S

    dev = board_device(ssh_board, tmp_path, timeout_s=60)
    assert dev.batch_timeout(1) == 60 and dev.batch_timeout(10) == 600
    assert dev.batch_timeout(1000) == BATCH_TIMEOUT_CAP_S
    slow = board_device(ssh_board, tmp_path, timeout_s=3 * BATCH_TIMEOUT_CAP_S)
    assert slow.batch_timeout(5) == 3 * BATCH_TIMEOUT_CAP_S  # never below one model's budget


def test_measure_many_falls_back_to_a_loop(tmp_path: Path, small_onnx: Path) -> None:
    from edgenas.devices.base import MeasureManyError, measure_many

    dev = get_device("onnxruntime-cpu")
    assert not hasattr(dev, "measure_many")
    paths = onnx_models(tmp_path / "models", [(8, 8), (12, 8)])
    seen: list[int] = []
    ms = measure_many(dev, [paths[0], small_onnx, paths[1]], runs=3, warmup=1, on_result=lambda i, m: seen.append(i))
    assert len(ms) == 3 and seen == [0, 1, 2] and all(m.runs == 3 and m.median_ms > 0 for m in ms)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(MeasureManyError, match="bad.onnx") as e:
        measure_many(dev, [paths[0], bad, paths[1]], runs=3, warmup=1)
    assert sorted(e.value.partial) == [0, 2] and list(e.value.errors) == [1]


def test_latency_and_frontend_tables_batch_runner_calls(ssh_board: StandInBoard, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration's per-layer table and the front-end table go to the board in batches: one runner
    invocation per chunk of micro-models, not one per layer; both land in the store."""
    from edgenas.devices.frontend_cost import build_frontend_table
    from edgenas.devices.latency_table import build_latency_table
    from edgenas.spec import DataConfig, LayerDesc
    from edgenas.store import Store

    layers = [LayerDesc(f"c{c}", "conv2d", (c, 12, 5), (c, 12, 5), (3, 3), (1, 1), (1, 1, 1, 1), c, "relu")
              for c in (8, 16, 24, 32, 40, 48, 56)]
    with board_device(ssh_board, tmp_path) as dev, Store(tmp_path / "s.sqlite") as store:
        dev.check()
        calls = count_runner_calls(dev, monkeypatch)
        table = build_latency_table(dev, layers, store, "onnx-fp32", runs=5, warmup=1, batch=4)
        batches = [c for c in calls if c[:1] == ["--batch"]]
        # the overhead model, then 7 layers in chunks of 4: three runner invocations, not eight
        assert len(batches) == 3 and table.measured == 7 and len(table.entries) == 7
        assert len(store.measurements(kind="layer", device=dev.name)) == 7
        calls.clear()
        configs = [DataConfig(8000, 10, 40, 40.0, 20.0), DataConfig(8000, 10, 40, 30.0, 10.0)]
        fe = build_frontend_table(dev, store, configs, tmp_path / "cache", runs=5, warmup=1)
        assert len([c for c in calls if c[:1] == ["--batch"]]) == 1 and fe.measured == 2
        assert all(v.latency_ms > 0 for v in fe.entries.values())
        calls.clear()
        assert build_frontend_table(dev, store, configs, tmp_path / "cache", runs=5, warmup=1).measured == 0
        assert not [c for c in calls if c[:1] == ["--batch"]]
