"""Device profiles: TOML files that name a device, its adapter, runtime, threads, SSH settings, limits.

A profile is what ``--device NAME`` resolves to. Built-in profiles live next to this module
(``devices/profiles/*.toml``); users add their own, without code, in the user profile directory
(``$EDGENAS_CONFIG/devices/*.toml``, else ``~/.config/edgenas/devices/*.toml``) or pass a file
path anywhere a device name is accepted. A user profile with the same name as a built-in one
replaces it (e.g. your own ``rpi4.toml`` with your board's host alias).

Example (``~/.config/edgenas/devices/pi-desk.toml``)::

    name = "pi-desk"
    adapter = "ssh"            # onnxruntime-cpu | litert-cpu | cuda | ssh
    runtime = "litert"         # onnxruntime | litert | torch
    threads = 4
    description = "Raspberry Pi 4B on my desk"

    [ssh]
    host = "pi-desk"           # host name, address or ~/.ssh/config alias
    user = "pi"
    python = "/home/pi/venv/bin/python"
    workdir = ".cache/edgenas" # relative to the remote home, or absolute
    timeout_s = 300

    [limits]                   # default budgets for searches on this device
    ram_kb = 256
    flash_kb = 1024
    latency_ms = 5

Unknown keys are errors (one line, with a suggestion); so are wrong types and adapter/runtime
combinations that cannot work.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgenas.errors import ConfigError

ADAPTER_KINDS = ("onnxruntime-cpu", "litert-cpu", "cuda", "ssh")
RUNTIMES = ("onnxruntime", "litert", "torch")
# Which runtimes each adapter kind can drive.
ADAPTER_RUNTIMES: dict[str, tuple[str, ...]] = {
    "onnxruntime-cpu": ("onnxruntime",),
    "litert-cpu": ("litert",),
    "cuda": ("torch", "onnxruntime"),
    "ssh": ("onnxruntime", "litert"),
}
# The artifact file format a runtime consumes.
RUNTIME_FORMATS: dict[str, str] = {"onnxruntime": "onnx", "litert": "tflite", "torch": "pt"}

BUILTIN_DIR = Path(__file__).resolve().parent / "profiles"


@dataclass(frozen=True)
class SSHSettings:
    """How to reach a board. Unset values come from ``~/.ssh/config`` (alias), then defaults."""

    host: str
    port: int | None = None  # None: ~/.ssh/config Port, else 22
    user: str | None = None  # None: ~/.ssh/config User, else the local user name
    key: str | None = None  # private key file; None: ~/.ssh/config IdentityFile, agent, default keys
    python: str = "python3"  # interpreter on the board
    workdir: str = ".cache/edgenas"  # runner + artifacts; relative paths are under the remote home
    accept_unknown_host_key: bool = False  # True: trust a host key not in known_hosts (not saved)
    known_hosts: str | None = None  # extra known_hosts file (besides system and ~/.ssh/known_hosts)
    timeout_s: float = 300.0  # limit for one runner invocation on the board
    connect_timeout_s: float = 10.0  # TCP connect + SSH handshake limit


@dataclass(frozen=True)
class Limits:
    """Default budgets for searches on this device (None: no default)."""

    ram_kb: float | None = None
    flash_kb: float | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class MeasureDefaults:
    """How the device's latency is measured unless a run says otherwise (``measure.latency_stat``,
    ``measure.loads``; ``calibrate --stat``). A dedicated board's median is repeatable; a shared
    host's is not (bench/RESULTS.md, latency repeatability), so its profile names a low percentile
    over many loads."""

    latency_stat: str = "median"  # the figure budgets apply to and the predictor predicts
    loads: int = 3  # separate loads of a model per measurement, samples pooled


def measure_defaults(device: Any) -> MeasureDefaults:
    """The measurement defaults of ``device``'s profile (plain defaults for a device without one)."""
    return getattr(getattr(device, "profile", None), "measure", None) or MeasureDefaults()


@dataclass(frozen=True)
class Profile:
    name: str
    adapter: str
    runtime: str
    threads: int = 1
    description: str = ""
    ssh: SSHSettings | None = None
    limits: Limits = field(default_factory=Limits)
    measure: MeasureDefaults = field(default_factory=MeasureDefaults)
    source: str = "<code>"  # the file it was read from

    @property
    def artifact_format(self) -> str:
        return RUNTIME_FORMATS[self.runtime]

    @property
    def builtin(self) -> bool:
        return Path(self.source).parent == BUILTIN_DIR

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["artifact_format"] = self.artifact_format
        d["builtin"] = self.builtin
        return d


# -- parsing -------------------------------------------------------------------------------------

_TOP_KEYS = ("name", "adapter", "runtime", "threads", "description", "ssh", "limits", "measure")
_SECTION_TYPES: dict[str, type] = {"ssh": SSHSettings, "limits": Limits, "measure": MeasureDefaults}


def _unknown(key: str, allowed: list[str] | tuple[str, ...], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown key {key!r} in {where}{hint} (allowed: {', '.join(allowed)})")


def _typed(value: Any, key: str, tp: Any, where: str) -> Any:
    """Check/coerce a TOML value against a dataclass field type (str/int/float/bool, optional)."""
    tps = str(tp)
    optional = "None" in tps
    if value is None and optional:
        return None
    if "bool" in tps:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    if "int" in tps and "float" not in tps:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {key} must be an integer, got {value!r}")
    if "float" in tps:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if isinstance(value, str):
        return value
    raise ConfigError(f"{where}: {key} must be a string, got {value!r}")


def _section(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table")
    names = [f.name for f in fields(cls)]
    kw: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            raise _unknown(key, names, where)
        tp = next(f.type for f in fields(cls) if f.name == key)
        kw[key] = _typed(value, key, tp, where)
    try:
        return cls(**kw)
    except TypeError:
        missing = [f.name for f in fields(cls)
                   if f.name not in kw and f.default is MISSING and f.default_factory is MISSING]
        raise ConfigError(f"{where}: missing required key(s) {', '.join(missing) or '?'}") from None


def profile_from_dict(data: dict[str, Any], source: str = "<dict>", default_name: str | None = None) -> Profile:
    """Validate a parsed profile table. ``default_name`` is used when the table has no ``name``."""
    where = f"device profile {source}"
    for key in data:
        if key not in _TOP_KEYS:
            raise _unknown(key, _TOP_KEYS, where)
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: 'name' must be a non-empty string")
    if any(c.isspace() for c in name) or "/" in name:
        raise ConfigError(f"{where}: name {name!r} must not contain spaces or '/'")
    adapter = data.get("adapter")
    if adapter not in ADAPTER_KINDS:
        close = difflib.get_close_matches(str(adapter), ADAPTER_KINDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{where}: adapter must be one of {', '.join(ADAPTER_KINDS)}, got {adapter!r}{hint}")
    runtime = data.get("runtime", ADAPTER_RUNTIMES[adapter][0])
    if runtime not in ADAPTER_RUNTIMES[adapter]:
        raise ConfigError(
            f"{where}: adapter {adapter!r} runs runtime {' or '.join(map(repr, ADAPTER_RUNTIMES[adapter]))},"
            f" got {runtime!r}"
        )
    threads = data.get("threads", 1)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"{where}: threads must be an integer >= 1, got {threads!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description must be a string")
    ssh = _section(SSHSettings, data["ssh"], f"[ssh] of {where}") if "ssh" in data else None
    if adapter == "ssh" and ssh is None:
        raise ConfigError(f"{where}: adapter 'ssh' needs an [ssh] table with at least host = \"…\"")
    if ssh is not None:
        if adapter != "ssh":
            raise ConfigError(f"{where}: an [ssh] table only applies to adapter = \"ssh\"")
        if not ssh.host:
            raise ConfigError(f"[ssh] of {where}: host must not be empty")
        if ssh.port is not None and not 0 < ssh.port < 65536:
            raise ConfigError(f"[ssh] of {where}: port must be 1..65535, got {ssh.port}")
        if ssh.timeout_s <= 0 or ssh.connect_timeout_s <= 0:
            raise ConfigError(f"[ssh] of {where}: timeout_s and connect_timeout_s must be > 0")
    limits = _section(Limits, data["limits"], f"[limits] of {where}") if "limits" in data else Limits()
    for k in ("ram_kb", "flash_kb", "latency_ms"):
        v = getattr(limits, k)
        if v is not None and v <= 0:
            raise ConfigError(f"[limits] of {where}: {k} must be > 0, got {v}")
    measure = _section(MeasureDefaults, data["measure"], f"[measure] of {where}") if "measure" in data \
        else MeasureDefaults()
    from edgenas.devices.base import STATS

    if measure.latency_stat not in STATS:
        raise ConfigError(f"[measure] of {where}: latency_stat must be one of {', '.join(STATS)}, "
                          f"got {measure.latency_stat!r}")
    if measure.loads < 1:
        raise ConfigError(f"[measure] of {where}: loads must be >= 1, got {measure.loads}")
    return Profile(name=name, adapter=adapter, runtime=runtime, threads=threads, description=description,
                   ssh=ssh, limits=limits, measure=measure, source=source)


def load_profile_file(path: str | Path) -> Profile:
    """Read and validate one profile file; the name defaults to the file's stem."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"device profile not found: {p}") from None
    except OSError as e:
        raise ConfigError(f"cannot read device profile {p}: {e.strerror or e}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"device profile {p} is not valid TOML: {e}") from None
    return profile_from_dict(data, source=str(p), default_name=p.stem)


# -- discovery -----------------------------------------------------------------------------------


def user_profile_dir() -> Path:
    """``$EDGENAS_CONFIG/devices`` if ``EDGENAS_CONFIG`` is set, else ``~/.config/edgenas/devices``."""
    base = os.environ.get("EDGENAS_CONFIG")
    root = Path(base).expanduser() if base else Path.home() / ".config" / "edgenas"
    return root / "devices"


def _load_dir(directory: Path) -> dict[str, Profile]:
    out: dict[str, Profile] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.glob("*.toml")):
        prof = load_profile_file(path)
        if prof.name in out:
            raise ConfigError(f"device profile {prof.name!r} is defined twice: {out[prof.name].source} and {path}")
        out[prof.name] = prof
    return out


def builtin_profiles() -> dict[str, Profile]:
    return _load_dir(BUILTIN_DIR)


def user_profiles() -> dict[str, Profile]:
    return _load_dir(user_profile_dir())


def all_profiles() -> dict[str, Profile]:
    """Name → profile: built-ins, replaced by user profiles of the same name."""
    profiles = builtin_profiles()
    profiles.update(user_profiles())
    return profiles


def list_profiles() -> list[Profile]:
    """Every known profile (built-in and user), sorted by name. What ``edgenas devices list`` shows."""
    return [p for _, p in sorted(all_profiles().items())]


def looks_like_path(name: str) -> bool:
    return name.endswith(".toml") or os.sep in name or name.startswith((".", "~"))


def get_profile(name: str) -> Profile:
    """The profile called ``name`` (user dir first, then built-in), or the profile file at path ``name``."""
    if looks_like_path(name):
        return load_profile_file(name)
    profiles = all_profiles()
    if name in profiles:
        return profiles[name]
    close = difflib.get_close_matches(name, list(profiles), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown device {name!r}{hint} (known: {', '.join(sorted(profiles)) or 'none'};"
                      f" add profiles in {user_profile_dir()})")
