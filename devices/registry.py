"""The device registry: name → factory returning a :class:`Device`.

Each adapter kind registers one factory here; ``get_device(name, **overrides)`` builds it with
keyword overrides (threads, …). Device profiles (TOML, added later) map a profile name to an
adapter kind plus keyword arguments and go through :data:`ADAPTERS`.
"""

from __future__ import annotations

from typing import Any, Callable

from edgenas.devices.base import Device
from edgenas.errors import ConfigError
from edgenas.registry import Registry

# Adapter kinds: how to talk to a runtime. A profile (or a plain device name) names one of these.
ADAPTERS = Registry[Callable[..., Device]]("device adapter")
# Devices users can name (`--device NAME`): a factory taking keyword overrides.
DEVICES = Registry[Callable[..., Device]]("device")


@ADAPTERS.register("onnxruntime-cpu")
def _onnxruntime_cpu_adapter(name: str = "onnxruntime-cpu", threads: int = 1, **kw: Any) -> Device:
    from edgenas.devices.onnxruntime_cpu import OnnxRuntimeCPU

    return OnnxRuntimeCPU(name=name, threads=threads, **kw)


@DEVICES.register("onnxruntime-cpu")
def _onnxruntime_cpu(**overrides: Any) -> Device:
    kw: dict[str, Any] = {"name": "onnxruntime-cpu", "threads": 1}
    kw.update(overrides)
    return ADAPTERS.get("onnxruntime-cpu")(**kw)


def get_device(name: str, **overrides: Any) -> Device:
    """Build the device called ``name``; ``overrides`` (e.g. ``threads=2``) replace its defaults."""
    factory = DEVICES.get(name)
    try:
        return factory(**overrides)
    except TypeError as e:
        raise ConfigError(f"bad settings for device {name!r}: {e}") from None
