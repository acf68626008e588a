"""The device registry: device names and profile files → :class:`Device` objects.

* :data:`ADAPTERS` — one factory per adapter kind (``onnxruntime-cpu``, ``litert-cpu``, ``cuda``,
  ``ssh``): ``factory(profile, **overrides) -> Device``.
* :data:`DEVICES` — devices users can name (``--device NAME``): ``factory(**overrides) -> Device``.
  Every built-in profile (``devices/profiles/*.toml``) is registered here at import.
* :func:`get_device` resolves ``name`` as: a path to a ``.toml`` profile file; else a user profile
  (``$EDGENAS_CONFIG/devices`` or ``~/.config/edgenas/devices``, which may replace a built-in);
  else a registered device. ``overrides`` (``threads=2``, …) replace the profile's values.
* :func:`list_profiles` and :func:`check_device` are what ``edgenas devices list`` and
  ``edgenas devices check NAME`` call.

Every device built from a profile carries it as ``device.profile`` (limits, source file, …).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from edgenas.devices.base import Device
from edgenas.devices.profiles import (
    Profile,
    all_profiles,
    builtin_profiles,
    get_profile,
    list_profiles,
    load_profile_file,
    looks_like_path,
    user_profile_dir,
    user_profiles,
)
from edgenas.errors import ConfigError, DeviceError
from edgenas.registry import Registry

__all__ = ["ADAPTERS", "DEVICES", "get_device", "get_device_from_file", "device_from_profile", "list_profiles",
           "check_device", "get_profile"]

# Adapter kinds: how to talk to a runtime. A profile names one of these.
ADAPTERS = Registry[Callable[..., Device]]("device adapter")
# Devices users can name (`--device NAME`): a factory taking keyword overrides.
DEVICES = Registry[Callable[..., Device]]("device")


def _threads(profile: Profile, overrides: dict[str, Any]) -> int:
    t = overrides.pop("threads", None)
    return int(t) if t is not None else profile.threads


@ADAPTERS.register("onnxruntime-cpu")
def _onnxruntime_cpu_adapter(profile: Profile, **overrides: Any) -> Device:
    from edgenas.devices.onnxruntime_cpu import OnnxRuntimeCPU

    return OnnxRuntimeCPU(name=profile.name, threads=_threads(profile, overrides), **overrides)


@ADAPTERS.register("litert-cpu")
def _litert_cpu_adapter(profile: Profile, **overrides: Any) -> Device:
    from edgenas.devices.litert_cpu import LiteRTCPU

    return LiteRTCPU(name=profile.name, threads=_threads(profile, overrides), **overrides)


@ADAPTERS.register("cuda")
def _cuda_adapter(profile: Profile, **overrides: Any) -> Device:
    from edgenas.devices.cuda import CudaDevice

    return CudaDevice(name=profile.name, runtime=profile.runtime, threads=_threads(profile, overrides), **overrides)


@ADAPTERS.register("ssh")
def _ssh_adapter(profile: Profile, **overrides: Any) -> Device:
    from edgenas.devices.ssh_board import SSHBoard

    assert profile.ssh is not None  # checked when the profile was parsed
    return SSHBoard(name=profile.name, runtime=profile.runtime, threads=_threads(profile, overrides),
                    ssh=profile.ssh, **overrides)


def device_from_profile(profile: Profile, **overrides: Any) -> Device:
    """Build the device a profile describes; bad ``overrides`` are a one-line ConfigError."""
    factory = ADAPTERS.get(profile.adapter)
    try:
        dev = factory(profile, **overrides)
    except TypeError as e:
        raise ConfigError(f"bad settings for device {profile.name!r}: {e}") from None
    try:
        dev.profile = profile  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - adapters are plain classes
        pass
    return dev


def _register_builtins() -> None:
    for name, profile in builtin_profiles().items():
        def factory(_p: Profile = profile, **overrides: Any) -> Device:
            return device_from_profile(_p, **overrides)

        DEVICES.register(name)(factory)


_register_builtins()


def get_device_from_file(path: str, **overrides: Any) -> Device:
    """Build the device described by the profile file at ``path``."""
    return device_from_profile(load_profile_file(path), **overrides)


def get_device(name: str, **overrides: Any) -> Device:
    """Build the device called ``name`` (or described by the profile file ``name``).

    ``overrides`` (e.g. ``threads=2``) replace the profile's values.
    """
    name = str(name)
    if looks_like_path(name):
        return get_device_from_file(name, **overrides)
    users = user_profiles()
    if name in users:
        return device_from_profile(users[name], **overrides)
    if name in DEVICES:
        factory = DEVICES.get(name)
        try:
            return factory(**overrides)
        except TypeError as e:
            raise ConfigError(f"bad settings for device {name!r}: {e}") from None
    known = sorted(set(DEVICES.names()) | set(users))
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown device {name!r}{hint} (known: {', '.join(known) or 'none'};"
                      f" add profiles in {user_profile_dir()})")


def check_device(name: str, **overrides: Any) -> dict[str, Any]:
    """Check one device and describe it: what ``edgenas devices check NAME`` prints.

    Returns ``{"name", "adapter", "runtime", "artifact_format", "threads", "source", "ok",
    "error", "runtime_version", "info"}``: ``ok`` False with ``error`` the one-line reason when
    the device is unusable (unreachable, no runtime, …). An unknown name or a broken profile file
    raises :class:`ConfigError` instead.
    """
    dev = get_device(name, **overrides)
    profile: Profile | None = getattr(dev, "profile", None)
    row: dict[str, Any] = {
        "name": dev.name,
        "adapter": profile.adapter if profile else None,
        "runtime": profile.runtime if profile else getattr(dev, "runtime", None),
        "artifact_format": dev.artifact_format,
        "threads": dev.threads,
        "source": profile.source if profile else None,
        "ok": False,
        "error": None,
        "runtime_version": None,
        "info": None,
    }
    try:
        dev.check()
        row["runtime_version"] = dev.runtime_version()
        row["info"] = dev.info()
        row["ok"] = True
    except DeviceError as e:
        row["error"] = str(e)
    finally:
        close = getattr(dev, "close", None)
        if callable(close):
            close()
    return row


# re-exported for callers that only import the registry
_ = (all_profiles, get_profile, list_profiles)
