from __future__ import annotations

from pathlib import Path

import pytest

from edgenas.devices.base import Device
from edgenas.devices.onnxruntime_cpu import OnnxRuntimeCPU
from edgenas.devices.profiles import (
    BUILTIN_DIR,
    Profile,
    builtin_profiles,
    get_profile,
    list_profiles,
    load_profile_file,
    measure_defaults,
    user_profile_dir,
)
from edgenas.devices.registry import ADAPTERS, DEVICES, check_device, get_device, get_device_from_file
from edgenas.errors import ConfigError


@pytest.fixture(autouse=True)
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty user config dir, so that the developer's own profiles do not leak in."""
    monkeypatch.setenv("EDGENAS_CONFIG", str(tmp_path / "cfg"))
    return tmp_path / "cfg" / "devices"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_builtin_profiles() -> None:
    profiles = builtin_profiles()
    assert {"onnxruntime-cpu", "litert-cpu", "cuda", "rpi4"} <= set(profiles)
    assert {p.name for p in list_profiles()} == set(profiles)
    rpi = profiles["rpi4"]
    assert rpi.adapter == "ssh" and rpi.runtime == "litert" and rpi.threads == 4 and rpi.artifact_format == "tflite"
    assert rpi.ssh is not None and rpi.ssh.host == "rpi4" and rpi.ssh.accept_unknown_host_key is False
    assert rpi.limits.ram_kb and rpi.limits.latency_ms and rpi.builtin
    assert profiles["cuda"].artifact_format == "pt" and profiles["onnxruntime-cpu"].artifact_format == "onnx"
    for name in profiles:
        assert name in DEVICES  # every built-in profile is a registered device
    assert set(ADAPTERS.names()) == {"onnxruntime-cpu", "litert-cpu", "cuda", "ssh"}
    d = rpi.to_dict()
    assert d["ssh"]["host"] == "rpi4" and d["artifact_format"] == "tflite"


def test_get_device_builds_every_builtin() -> None:
    for p in list_profiles():
        dev = get_device(p.name)
        assert isinstance(dev, Device)
        assert dev.name == p.name and dev.threads == p.threads and dev.artifact_format == p.artifact_format
        assert dev.profile == p  # type: ignore[attr-defined]


def test_ort_device_still_resolves_with_override() -> None:
    dev = get_device("onnxruntime-cpu", threads=3)
    assert isinstance(dev, OnnxRuntimeCPU) and dev.threads == 3 and dev.name == "onnxruntime-cpu"
    with pytest.raises(ConfigError, match="did you mean onnxruntime-cpu"):
        get_device("onnxruntime-cpux")
    with pytest.raises(ConfigError, match="bad settings"):
        get_device("onnxruntime-cpu", bogus=1)


def test_user_profile_dir_and_override(user_config: Path) -> None:
    assert user_profile_dir() == user_config
    write(user_config / "laptop.toml", 'adapter = "onnxruntime-cpu"\nthreads = 2\n')  # name from file stem
    write(user_config / "mine.toml", 'name = "rpi4"\nadapter = "ssh"\nruntime = "onnxruntime"\n'
                                     '[ssh]\nhost = "10.0.0.7"\nuser = "pi"\n')
    names = [p.name for p in list_profiles()]
    assert "laptop" in names and names.count("rpi4") == 1
    laptop = get_device("laptop")
    assert isinstance(laptop, OnnxRuntimeCPU) and laptop.threads == 2 and laptop.name == "laptop"
    rpi = get_profile("rpi4")
    assert rpi.source == str(user_config / "mine.toml") and rpi.runtime == "onnxruntime" and not rpi.builtin
    assert get_device("rpi4").ssh.host == "10.0.0.7"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="did you mean laptop"):
        get_device("laptpo")


def test_home_config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGENAS_CONFIG")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_profile_dir() == tmp_path / ".config" / "edgenas" / "devices"


def test_profile_file_path(tmp_path: Path) -> None:
    path = write(tmp_path / "x" / "board.toml", 'name = "bench"\nadapter = "litert-cpu"\nthreads = 2\n'
                                                 '[limits]\nram_kb = 64\nlatency_ms = 2.5\n')
    p = load_profile_file(path)
    assert p == get_profile(str(path))
    assert p.name == "bench" and p.limits.ram_kb == 64.0 and p.limits.latency_ms == 2.5 and p.limits.flash_kb is None
    dev = get_device(str(path), threads=1)
    assert dev.name == "bench" and dev.threads == 1 and dev.artifact_format == "tflite"
    assert get_device_from_file(str(path)).threads == 2


@pytest.mark.parametrize("text, match", [
    ('name = "a"\nadapter = "onnxruntime-cpu"\nthread = 2\n', "unknown key 'thread'.*did you mean 'threads'"),
    ('name = "a"\nadapter = "ssh"\n[ssh]\nhost = "h"\nprot = 22\n', r"unknown key 'prot' in \[ssh\].*'port'"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\n[limits]\nram = 5\n', r"unknown key 'ram'.*'ram_kb'"),
    ('name = "a"\nadapter = "onnxruntime"\n', "adapter must be one of.*did you mean 'onnxruntime-cpu'"),
    ('name = "a"\nadapter = "litert-cpu"\nruntime = "onnxruntime"\n', "runs runtime 'litert'"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\nthreads = 0\n', "threads must be an integer >= 1"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\nthreads = "2"\n', "threads must be an integer"),
    ('name = "a"\nadapter = "ssh"\n', r"needs an \[ssh\] table"),
    ('name = "a"\nadapter = "ssh"\n[ssh]\nuser = "pi"\n', "missing required key.*host"),
    ('name = "a"\nadapter = "ssh"\n[ssh]\nhost = "h"\nport = "22"\n', "port must be an integer"),
    ('name = "a"\nadapter = "ssh"\n[ssh]\nhost = "h"\naccept_unknown_host_key = 1\n', "true or false"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\n[ssh]\nhost = "h"\n', r"only applies to adapter"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\n[limits]\nram_kb = -1\n', "ram_kb must be > 0"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\n[measure]\nlatency_stat = "p50"\n', "latency_stat must be one of"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\n[measure]\nloads = 0\n', "loads must be >= 1"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\n[measure]\nload = 2\n', r"unknown key 'load' in \[measure\].*'loads'"),
    ('name = "a b"\nadapter = "onnxruntime-cpu"\n', "must not contain spaces"),
    ('name = "a"\nadapter = "onnxruntime-cpu"\nthreads = [\n', "not valid TOML"),
])
def test_bad_profiles_are_one_line_errors(tmp_path: Path, text: str, match: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError, match=match) as e:
        load_profile_file(path)
    assert "\n" not in str(e.value)


def test_missing_profile_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="device profile not found"):
        get_device(str(tmp_path / "nope.toml"))


def test_duplicate_user_profile_names(user_config: Path) -> None:
    write(user_config / "a.toml", 'name = "same"\nadapter = "onnxruntime-cpu"\n')
    write(user_config / "b.toml", 'name = "same"\nadapter = "litert-cpu"\n')
    with pytest.raises(ConfigError, match="defined twice"):
        list_profiles()


def test_check_device_rows() -> None:
    ok = check_device("onnxruntime-cpu")
    assert ok["ok"] and ok["error"] is None and ok["runtime_version"] and ok["adapter"] == "onnxruntime-cpu"
    assert ok["info"]["identity"]["hostname"] and ok["source"].startswith(str(BUILTIN_DIR))
    bad = check_device("cuda")  # no GPU on CI: ok False with the reason, not an exception
    import torch

    if not torch.cuda.is_available():
        assert bad["ok"] is False and "no CUDA GPU" in bad["error"]
    with pytest.raises(ConfigError, match="unknown device"):
        check_device("nonexistent-device")


def test_profile_dataclass_is_frozen() -> None:
    p = builtin_profiles()["litert-cpu"]
    assert isinstance(p, Profile)
    with pytest.raises(Exception):
        p.threads = 3  # type: ignore[misc]


def test_measure_defaults_per_profile(tmp_path: Path) -> None:
    """Shared-host CPU profiles budget p10 over 10 loads; boards (and profiles without [measure])
    the median over 3; a profile file can set its own; a run's measure.* settings override them."""
    assert (measure_defaults(get_device("litert-cpu")).latency_stat, measure_defaults(get_device("litert-cpu")).loads) \
        == ("p10", 10)
    assert measure_defaults(get_device("onnxruntime-cpu")).latency_stat == "p10"
    rpi4 = get_profile("rpi4")
    assert (rpi4.measure.latency_stat, rpi4.measure.loads) == ("median", 3)
    path = write(tmp_path / "b.toml", 'name = "b"\nadapter = "onnxruntime-cpu"\n[measure]\nlatency_stat = "p25"\nloads = 4\n')
    d = measure_defaults(get_device_from_file(str(path)))
    assert (d.latency_stat, d.loads) == ("p25", 4)
    assert measure_defaults(object()).latency_stat == "median"
