"""Run configuration: defaults < file < flags < --set, errors with suggestions, coercion."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edgenas import config as C
from edgenas.config import MeasureConfig, RunConfig
from edgenas.errors import ConfigError
from edgenas.search import SearchConfig
from edgenas.spaces.kws_dscnn import KWSSpaceConfig
from edgenas.train import TrainConfig

TOML = """
seed = 3
max_ram_kb = 64
test_speakers = ["nicolas"]

[search]
epochs = 5
strategy = "darts"

[space]
widths = [8, 16]
windows = ["30/10"]

[measure]
runs = 7
"""


def test_defaults() -> None:
    cfg = C.resolve()
    assert cfg == RunConfig()
    assert cfg.search == SearchConfig() and cfg.train == TrainConfig() and cfg.measure == MeasureConfig()
    assert cfg.space == KWSSpaceConfig()
    assert cfg.max_latency_ms == 0.0 and cfg.data == ""


def test_file_overrides_defaults(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text(TOML)
    cfg = C.resolve(f)
    assert cfg.seed == 3
    assert cfg.max_ram_kb == 64.0 and isinstance(cfg.max_ram_kb, float)
    assert cfg.test_speakers == ("nicolas",)
    assert cfg.search.epochs == 5 and cfg.search.strategy == "darts"
    assert cfg.search.batch_size == SearchConfig().batch_size  # untouched keys keep their defaults
    assert cfg.space.widths == (8, 16) and cfg.space.windows == ("30/10",)
    assert cfg.space.n_blocks == KWSSpaceConfig().n_blocks
    assert cfg.measure.runs == 7


def test_json_file(tmp_path: Path) -> None:
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"train": {"epochs": 2}, "seed": 9}))
    cfg = C.resolve(f)
    assert cfg.train.epochs == 2 and cfg.seed == 9


def test_precedence_defaults_file_flags_set(tmp_path: Path) -> None:
    f = tmp_path / "run.toml"
    f.write_text(TOML)
    # file sets seed 3 and search.epochs 5; flags override both; --set overrides the flag
    cfg = C.resolve(f, sets=["search.epochs=9"], flags={"seed": 4, "search.epochs": 6})
    assert cfg.seed == 4  # flag > file
    assert cfg.search.epochs == 9  # --set > flag > file
    assert cfg.search.strategy == "darts"  # file > default
    assert cfg.measure.runs == 7
    cfg2 = C.resolve(f, flags={"seed": 4})
    assert cfg2.search.epochs == 5
    # the last of several --set wins
    assert C.resolve(sets=["seed=1", "seed=2"]).seed == 2


def test_unknown_key_suggests() -> None:
    with pytest.raises(ConfigError) as ei:
        C.resolve(sets=["search.epoch=3"])
    assert "unknown config key 'search.epoch'" in str(ei.value)
    assert "did you mean epochs" in str(ei.value)
    with pytest.raises(ConfigError, match="unknown config key 'serch.epochs'; did you mean search"):
        C.resolve(sets=["serch.epochs=3"])
    with pytest.raises(ConfigError, match="did you mean widths"):
        C.resolve(sets=["space.widht=8"])


def test_unknown_key_in_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[train]\nepoch = 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.epoch'; did you mean epochs"):
        C.resolve(f)


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("seed=abc", "invalid value 'abc' for seed (expected int)"),
        ("search.epochs=1.5", "invalid value '1.5' for search.epochs"),
        ("max_latency_ms=fast", "invalid value 'fast' for max_latency_ms (expected float)"),
        ("space.widths=8,x", "invalid value 'x' for space.widths"),
        ("space.widths=[8, 1", "for space.widths"),
    ],
)
def test_type_coercion_errors(item: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        C.resolve(sets=[item])
    assert fragment in str(ei.value)
    assert "\n" not in str(ei.value)


def test_type_coercion_from_file_values(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("seed = 2.0\nmax_latency_ms = 1\n")
    cfg = C.resolve(f)
    assert cfg.seed == 2 and type(cfg.seed) is int
    assert cfg.max_latency_ms == 1.0 and type(cfg.max_latency_ms) is float
    f.write_text("seed = 2.5\n")
    with pytest.raises(ConfigError, match="for seed"):
        C.resolve(f)


@pytest.mark.parametrize(
    "item, attr, expected",
    [
        ("space.widths=8,16", ("space", "widths"), (8, 16)),
        ("space.widths= 8 , 16 ,", ("space", "widths"), (8, 16)),
        ("space.widths=[8, 16, 24]", ("space", "widths"), (8, 16, 24)),
        ("space.widths=32", ("space", "widths"), (32,)),
        ("space.windows=30/10,40/20", ("space", "windows"), ("30/10", "40/20")),
        ("space.sample_rates=8000", ("space", "sample_rates"), (8000,)),
        ("test_speakers=jackson, nicolas", ("test_speakers",), ("jackson", "nicolas")),
        ("space.block_ops=[\"dw3x3\", \"skip\"]", ("space", "block_ops"), ("dw3x3", "skip")),
    ],
)
def test_tuple_parsing(item: str, attr: tuple[str, ...], expected: tuple) -> None:
    obj = C.resolve(sets=[item])
    for a in attr:
        obj = getattr(obj, a)
    assert obj == expected
    assert isinstance(obj, tuple)


def test_set_needs_equals_and_sections() -> None:
    with pytest.raises(ConfigError, match="--set expects key=value, got 'seed'"):
        C.resolve(sets=["seed"])
    with pytest.raises(ConfigError, match="search is a section"):
        C.resolve(sets=["search=3"])
    with pytest.raises(ConfigError, match=r"seed is not a section \(in 'seed.x'\)"):
        C.resolve(sets=["seed.x=1"])
    # a value may itself contain '='
    assert C.resolve(sets=["data=/tmp/a=b"]).data == "/tmp/a=b"


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        C.resolve(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = = 3\n")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        C.resolve(bad)
    badj = tmp_path / "bad.json"
    badj.write_text("{")
    with pytest.raises(ConfigError, match="cannot parse config file"):
        C.resolve(badj)


def test_round_trip_through_saved_dict() -> None:
    cfg = C.resolve(sets=["space.widths=8,16", "space.windows=40/20", "test_speakers=a,b", "max_ram_kb=64",
                          "search.epochs=2", "train.lr=0.01", "measure.runs=20"])
    saved = json.loads(json.dumps(C.to_dict(cfg)))  # what config.json holds
    assert saved["space"]["widths"] == [8, 16]
    back = C.from_dict(saved)
    assert back == cfg


def test_configs_are_frozen() -> None:
    cfg = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.search.epochs = 1  # type: ignore[misc]


def test_task_config_defaults_sit_below_file_flags_and_set(tmp_path: Path) -> None:
    from edgenas.tasks import get_task

    assert get_task("kws").config_defaults == {}  # kws keeps the global defaults
    image = C.resolve(flags={"task": "image"})
    assert image.search.fill_budget and image.search.latency_target
    assert not C.resolve(flags={"task": "image"}, sets=["search.fill_budget=false"]).search.fill_budget
    f = tmp_path / "c.toml"
    f.write_text('task = "image"\n[search]\nlatency_target = false\n')
    cfg = C.resolve(file=f)
    assert not cfg.search.latency_target and cfg.search.fill_budget
    # a stored run config keeps what it says (a resumed run does not pick up changed task defaults)
    stored = C.to_dict(C.resolve(flags={"task": "image"}, sets=["search.fill_budget=false"]))
    assert not C.from_dict(stored).search.fill_budget
    kws = C.resolve(flags={"task": "kws"})
    assert not kws.search.fill_budget and not kws.search.latency_target
