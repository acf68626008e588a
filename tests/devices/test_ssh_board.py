"""The SSH board adapter against a stand-in board: sshd on 127.0.0.1 (see sshd_fixture.py)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sshd_fixture import StandInBoard, free_port, keygen

from edgenas.devices.base import Device, Measurement
from edgenas.devices.measure import measure_cached
from edgenas.devices.registry import check_device, get_device
from edgenas.devices.ssh_board import SSHBoard
from edgenas.errors import DeviceError
from edgenas.store import Store


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No ~/.ssh/config or ~/.ssh/known_hosts of the developer's; no ssh-agent."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("EDGENAS_CONFIG", str(tmp_path / "cfg"))
    return home


def board_device(board: StandInBoard, tmp_path: Path, **kw: object) -> SSHBoard:
    dev = get_device(str(board.profile(path=tmp_path / "board.toml", **kw)))  # type: ignore[arg-type]
    assert isinstance(dev, SSHBoard)
    return dev


def wrapper(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


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
