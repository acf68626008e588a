"""The task layer: registry, the contract every task keeps (parametrised over ``TASKS``, so a new
task is picked up), the CLI's `edgenas tasks`, and stored kws specs keeping their hashes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgenas import config as C
from edgenas.cli import main
from edgenas.errors import ConfigError
from edgenas.spaces import SPACES, get_space
from edgenas.spec import ArchSpec
from edgenas.store import Store
from edgenas.devices.base import Measurement
from edgenas.tasks import TASKS, Task, get_task
from edgenas.train import TrainConfig

STORED = json.loads((Path(__file__).parent / "data" / "stored_kws_specs.json").read_text())["specs"]


def _space(task: Task):
    return get_space(task.default_space, config=SPACES.get(task.default_space).config_class(),
                     **task.calibration_options)


@pytest.mark.parametrize("name", TASKS.names())
def test_task_contract(name: str) -> None:
    task = get_task(name)
    assert task.name == name and task.summary and task.input_kind
    assert SPACES.get(task.default_space).task == name  # the default space is one of the task's
    space = _space(task)
    data = space.data_configs()
    assert data and all(isinstance(d, task.data_config_class) for d in data)
    assert len({d.key() for d in data}) == len(data)  # keys tell data configurations apart
    for d in data[:3]:
        assert task.data_config_class.from_dict(json.loads(json.dumps(d.to_dict()))) == d
        x = task.example_input(d, n=3, seed=1)
        assert x.shape == (3, *d.input_shape) and x.dtype == np.float32 and np.isfinite(x).all()
        assert np.array_equal(x, task.example_input(d, n=3, seed=1))
        # standardisation: the statistics broadcast back over the batch and standardise it
        stats = task.norm_stats(x, d)
        if stats is not None:  # (a task may take its inputs unstandardised: SR's pixel values)
            z = task.normalize(x, stats)
            assert z.shape == x.shape
            np.testing.assert_allclose(z.mean(axis=task.norm_axes), 0.0, atol=1e-4)
        # augmentation keeps the shape; the objective scores the space's own network on it
        g = torch.Generator().manual_seed(0)
        xt = torch.from_numpy(x)
        assert task.augment(xt, TrainConfig(), g).shape == xt.shape
        spec = space.spec({p.name: p.options[0] for p in space.arch_points} | space.data_labels(d))
        out = space.build(spec).eval()(xt)
        y = torch.from_numpy(task.example_target(d, n=len(x), seed=2))
        loss = task.loss(out, y)
        assert loss.ndim == 0 and torch.isfinite(loss)
        score = task.score(out.detach().numpy(), y.numpy())
        assert np.isfinite(score) and score == pytest.approx(float(task.hits(out.detach(), y)) / len(x), rel=1e-5)
        if not task.metric.unit:  # a fraction
            assert 0 <= score <= 1
    assert task.describe_data(data[0])
    # an ArchSpec of the task round-trips through JSON with its data configuration's type
    spec = space.sample(__import__("random").Random(0))
    back = ArchSpec.from_json(spec.to_json())
    assert back == spec and isinstance(back.data, task.data_config_class) and back.hash() == spec.hash()


def test_classification_objective_is_cross_entropy_and_accuracy() -> None:
    task = get_task("kws")
    out = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.5]])
    y = torch.tensor([0, 1, 2])
    assert float(task.hits(out, y)) == 2.0
    assert float(task.loss(out, y)) == pytest.approx(float(torch.nn.functional.cross_entropy(out, y)))
    assert task.metric.name == "accuracy" and task.metric.higher_is_better


def test_classification_scores_a_split_and_judges_fidelity_by_argmax() -> None:
    task = get_task("kws")
    out = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.5]], np.float32)
    y = np.array([0, 1, 2])
    assert task.score(out, y) == pytest.approx(2 / 3)
    assert np.isnan(task.score(out[:0], y[:0]))
    ref = out.copy()
    ref[2] = [0.0, 0.0, 1.0]  # fp32 says class 2 for the last example; the file says class 0
    assert task.fidelity(out, ref, y) == pytest.approx(2 / 3)
    assert task.fidelity(out, out, y) == 1.0


def test_calls_per_input_is_the_tiles_of_a_frame_and_one_elsewhere() -> None:
    from edgenas.spec import DataConfig
    from edgenas.tasks import calls_per_input
    from edgenas.tasks.sr_config import SRConfig

    assert calls_per_input(DataConfig()) == 1
    cfg = SRConfig(tile=32, frame_w=320, frame_h=240)
    assert calls_per_input(cfg) == cfg.tiles_per_frame == 10 * 8


@pytest.mark.parametrize("stored", STORED, ids=[s["hash"] for s in STORED])
def test_stored_kws_spec_keeps_its_hash(stored: dict, tmp_path: Path) -> None:
    spec = ArchSpec.from_dict(stored["spec"])
    assert spec.hash() == stored["hash"]
    assert json.loads(spec.to_json()) == stored["spec"]  # the JSON is unchanged too
    get_space(spec.space, num_classes=spec.num_classes).check(spec)  # still a point of its space
    # a measurement stored under the old hash is found by the spec read back now
    with Store(tmp_path / "m.sqlite") as store:
        m = Measurement(median_ms=0.1, p90_ms=0.12, samples_ms=[0.1, 0.12], warmup=1, runs=2, threads=1,
                        runtime="litert", runtime_version="1.0", device="litert-cpu", device_identity={})
        store.put_measurement(f"net-{stored['hash']}", m, kind="model", fmt="tflite-int8", spec_hash=stored["hash"])
        rows = store.measurements(spec_hash=spec.hash())
        assert len(rows) == 1 and rows[0]["median_ms"] == pytest.approx(0.1)


def test_unknown_task_in_a_spec_is_a_config_error() -> None:
    d = dict(STORED[0]["spec"], task="nope")
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        ArchSpec.from_dict(d)


def test_config_takes_the_task_default_space_and_rejects_another_tasks_space(monkeypatch) -> None:
    assert C.resolve(flags={"task": "kws"}).space_name == "kws-dscnn"
    assert C.resolve(flags={"task": "kws", "space_name": "kws-tcn"}).space_name == "kws-tcn"
    with pytest.raises(ConfigError, match="unknown task"):
        C.resolve(flags={"task": "speech"})

    class Other(type(get_task("kws"))):  # a second task whose spaces are not kws spaces
        name = "other"

    monkeypatch.setitem(TASKS._items, "other", Other)
    with pytest.raises(ConfigError, match="space kws-dscnn is a kws space, not one of task other"):
        C.resolve(flags={"task": "other", "space_name": "kws-dscnn"})


def test_cli_lists_tasks(capsys) -> None:
    assert main(["tasks"]) == 0
    text = capsys.readouterr().out
    for name in TASKS.names():
        assert text.count(f"{name} ") >= 1
    assert "kws-dscnn" in text and "metric: accuracy" in text
    assert main(["tasks", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == TASKS.names()
    assert all(r["spaces"] and r["default_space"] in r["spaces"] for r in rows)
    by = {r["name"]: r for r in rows}
    assert by["kws"]["config_defaults"] == {} and by["image"]["config_defaults"]["search.fill_budget"] is True
    assert "defaults of this task (override with --set): search.strategy=\"gumbel-hard\"" in text


def test_image_config_and_the_task_of_a_data_configuration() -> None:
    from edgenas.spec import DataConfig
    from edgenas.tasks import task_of
    from edgenas.tasks.image import ImageConfig

    cfg = ImageConfig(24, "grey")
    assert cfg.input_shape == (1, 24, 24) and ImageConfig(24).input_shape == (3, 24, 24)
    assert cfg.key() == "img24_grey_src32x32" and ImageConfig.from_dict(cfg.to_dict()) == cfg
    assert task_of(cfg).name == "image" and task_of(DataConfig()).name == "kws"
    for bad in ({"colour": "cmyk"}, {"resolution": 0}):
        with pytest.raises(ConfigError):
            ImageConfig(**bad)
    # a space for 32x32 sources refuses a configuration for other sources, in one line
    space = get_space("image-mbv2", num_classes=10)
    with pytest.raises(ConfigError, match="64x64 px sources"):
        space.data_labels(ImageConfig(32, "rgb", 64, 64))
    assert "upscaled from 32×32" in get_task("image").describe_data(ImageConfig(48))
