"""Run configuration: frozen dataclasses, resolved as defaults < file < ``--set key=value``.

Unknown keys are errors with suggestions; the resolved config is saved in every run directory.
The ``space`` section is the config dataclass of the space named by ``space_name``
(the registered space class's ``config_class``): when resolving, the final ``space_name`` (from any source) is
chosen first and every ``space.*`` key, whatever its order, is validated against that space.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from edgenas.errors import ConfigError
from edgenas.search import SearchConfig
from edgenas.spaces import SPACES, space_config_class
from edgenas.tasks import get_task
from edgenas.spaces.kws_dscnn import KWSSpaceConfig
from edgenas.train import TrainConfig


@dataclass(frozen=True)
class MeasureConfig:
    runs: int = 200
    warmup: int = 20
    threads: int = 1
    latency_quant: str = "int8"  # the model the latency budget applies to (what ships), in the device's format
    # the latency figure budgets apply to: median, p25 or p10; "auto" = the device profile's
    # ([measure] latency_stat: median for boards, p10 for the shared-host CPU profiles)
    latency_stat: str = "auto"
    # the calibrated predictor's prices are raised by this fraction so that derived specs hold their
    # budget as measured; -1 = auto: the predictor's hold-out 90th percentile of measured/predicted − 1
    latency_margin: float = -1.0
    # where calibrated predictors are looked up: "" = <cache>/predictors, where `edgenas calibrate`
    # writes; a directory laid out the same way (another cache's predictors, a shared copy) otherwise
    predictors: str = ""
    # separate loads of a model per measurement, samples pooled (as calibration does); 0 = the
    # device profile's ([measure] loads)
    loads: int = 0
    # when the shipped model measures over the latency budget, up to this many more fresh passes,
    # stopping at the first that holds; the budget check uses the lowest pass (interference only
    # adds time, so one high reading on a shared host is not the model's latency). 0 = one pass
    confirm: int = 2
    lut_runs: int = 30
    chain_runs: int = 50  # runs per whole-network (chain) latency measurement
    chain_samples: int = 40  # sampled specs the table correction is fitted on


BUDGET_SCOPES = ("end-to-end", "model")


@dataclass(frozen=True)
class RunConfig:
    task: str = "kws"
    space_name: str = "kws-dscnn"
    device: str = "onnxruntime-cpu"
    data: str = ""  # dataset path; "" = the generated synthetic demo dataset
    layout: str = "auto"
    test_speakers: tuple[str, ...] = ()
    val_speakers: tuple[str, ...] = ()
    seed: int = 0
    # time series without a TEST file: "i/k" makes the test split fold i of k stratified folds of
    # TRAIN (the cross-validation benchmark); "" = a seeded, stratified 20% hold-out
    test_fold: str = ""
    max_latency_ms: float = 0.0  # 0 = no budget
    max_ram_kb: float = 0.0
    max_flash_kb: float = 0.0
    budget_scope: str = "end-to-end"  # budgets apply to front end + model ("end-to-end") or the model alone ("model")
    space: Any = field(default_factory=KWSSpaceConfig)  # the config dataclass of ``space_name``
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)

    def __post_init__(self) -> None:
        if self.budget_scope not in BUDGET_SCOPES:
            raise ConfigError(f"budget_scope must be one of {', '.join(BUDGET_SCOPES)}, got {self.budget_scope!r}")
        get_task(self.task)  # an unknown task is a one-line error with suggestions
        space_task = SPACES.get(self.space_name).task
        if space_task != self.task:
            raise ConfigError(f"space {self.space_name} is a {space_task} space, not one of task {self.task} "
                              f"(its default space: {get_task(self.task).default_space})")
        cls = space_config_class(self.space_name)
        if isinstance(self.space, cls):
            return
        if is_dataclass(self.space) and self.space == type(self.space)():
            object.__setattr__(self, "space", cls())  # untouched defaults of another space: switch
            return
        raise ConfigError(f"space options {type(self.space).__name__} do not belong to space {self.space_name} "
                          f"(it takes {cls.__name__})")


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    try:
        if origin in (types.UnionType, typing.Union):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if value is None or value in ("none", "None", "null"):
                return None
            return _coerce(value, args[0], key)
        if origin is tuple:
            (inner, *_rest) = typing.get_args(tp)
            if isinstance(value, str):
                text = value.strip()
                if text.startswith("["):
                    value = json.loads(text)
                else:
                    value = [v.strip() for v in text.split(",") if v.strip()]
            return tuple(_coerce(v, inner, key) for v in value)
        if tp is bool:
            if isinstance(value, str):
                if value.lower() in ("1", "true", "yes", "on"):
                    return True
                if value.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (ValueError, TypeError, json.JSONDecodeError):
        raise ConfigError(f"invalid value {value!r} for {key} (expected {getattr(tp, '__name__', tp)})") from None
    return value


def _update(obj: Any, path: list[str], value: Any, full: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in fields(obj)]
    head = path[0]
    if head not in names:
        close = difflib.get_close_matches(head, names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config key {full!r}{hint}")
    cur = getattr(obj, head)
    if len(path) == 1:
        if is_dataclass(cur):
            if not isinstance(value, dict):
                raise ConfigError(f"{full} is a section; set its keys, e.g. {full}.<key>=…")
            for k, v in value.items():
                cur = _update(cur, [k], v, f"{full}.{k}")
            return replace(obj, **{head: cur})
        return replace(obj, **{head: _coerce(value, hints[head], full)})
    if not is_dataclass(cur):
        raise ConfigError(f"{'.'.join(full.split('.')[:len(full.split('.')) - len(path) + 1])} is not a section (in {full!r})")
    return replace(obj, **{head: _update(cur, path[1:], value, full)})


def _set_space_name(cfg: RunConfig, value: Any) -> RunConfig:
    """``space_name`` selects the ``space`` section's dataclass: switching to a space with another
    config class starts that section from the new space's defaults."""
    name = _coerce(value, str, "space_name")
    cls = space_config_class(name)
    return replace(cfg, space_name=name, space=cfg.space if isinstance(cfg.space, cls) else cls())


def apply(cfg: RunConfig, key: str, value: Any) -> RunConfig:
    try:
        if key == "space_name":
            return _set_space_name(cfg, value)
        return _update(cfg, key.split("."), value, key)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # a dataclass's own validation
        raise ConfigError(f"invalid value for {key}: {e}") from None


def load_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    try:
        if path.suffix == ".toml":
            return tomllib.loads(path.read_text())
        return json.loads(path.read_text())
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot parse config file {path}: {e}") from None


def _apply_all(items: list[tuple[str, Any]]) -> RunConfig:
    """Apply ``items`` in order, after choosing the task and the space: the last ``task`` and
    ``space_name`` of all items decide them (no ``space_name``: the task's default space), so
    ``space.*`` keys may come before either. The task's ``config_defaults`` come first."""
    tasks = [v for k, v in items if k == "task"]
    names = [v for k, v in items if k == "space_name"]
    task = _coerce(tasks[-1], str, "task") if tasks else RunConfig.task
    space_name = names[-1] if names else get_task(task).default_space
    cls = space_config_class(_coerce(space_name, str, "space_name"))
    cfg = RunConfig(task=task, space_name=_coerce(space_name, str, "space_name"), space=cls())
    for k, v in [*get_task(task).config_defaults.items(), *items]:
        if k not in ("space_name", "task"):
            cfg = apply(cfg, k, v)
    return cfg


def resolve(file: Path | None = None, sets: list[str] | None = None, flags: dict[str, Any] | None = None) -> RunConfig:
    """defaults < config file < CLI flags (``flags``) < ``--set key=value`` overrides."""
    items: list[tuple[str, Any]] = []
    if file is not None:
        items += list(load_file(file).items())
    items += list((flags or {}).items())
    for item in sets or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        items.append((k.strip(), v.strip()))
    return _apply_all(items)


def from_dict(d: dict[str, Any]) -> RunConfig:
    return _apply_all(list(d.items()))
