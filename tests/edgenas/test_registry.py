"""The one registry mechanism: registration, duplicates, lookup errors with suggestions."""

from __future__ import annotations

import pytest

from edgenas.errors import ConfigError, EdgenasError
from edgenas.registry import Registry


def _reg() -> Registry[object]:
    reg: Registry[object] = Registry("widget")

    @reg.register("gumbel")
    def gumbel() -> str:
        return "g"

    reg.register("darts")(lambda: "d")
    reg.register("evolution")(lambda: "e")
    return reg


def test_register_and_get() -> None:
    reg = _reg()
    assert reg.get("gumbel")() == "g"
    assert reg.get("darts")() == "d"
    assert reg.names() == ["darts", "evolution", "gumbel"]
    assert list(reg) == reg.names()
    assert "darts" in reg and "nope" not in reg


def test_decorator_returns_the_object() -> None:
    reg: Registry[type] = Registry("thing")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A and A.__name__ == "A"


def test_duplicate_is_refused_and_first_kept() -> None:
    reg = _reg()
    with pytest.raises(ValueError, match="widget 'gumbel' registered twice"):
        reg.register("gumbel")(lambda: "other")
    assert reg.get("gumbel")() == "g"


def test_unknown_name_suggests_close_match() -> None:
    reg = _reg()
    with pytest.raises(ConfigError) as ei:
        reg.get("gumbell")
    msg = str(ei.value)
    assert "unknown widget 'gumbell'" in msg
    assert "did you mean gumbel?" in msg
    assert "(known: darts, evolution, gumbel)" in msg
    assert "\n" not in msg
    assert isinstance(ei.value, EdgenasError)


def test_unknown_name_without_close_match_lists_known() -> None:
    with pytest.raises(ConfigError) as ei:
        _reg().get("zzz")
    assert "did you mean" not in str(ei.value)
    assert "known: darts, evolution, gumbel" in str(ei.value)


def test_empty_registry_error() -> None:
    with pytest.raises(ConfigError, match=r"known: none"):
        Registry("device").get("rpi4")


def test_real_registries_hold_the_builtins() -> None:
    from edgenas.devices.registry import DEVICES
    from edgenas.spaces import SPACES
    from edgenas.strategies import STRATEGIES

    assert "kws-dscnn" in SPACES
    assert {"gumbel", "darts"} <= set(STRATEGIES.names())
    assert "onnxruntime-cpu" in DEVICES
    with pytest.raises(ConfigError, match="did you mean kws-dscnn"):
        SPACES.get("kws-dscn")
