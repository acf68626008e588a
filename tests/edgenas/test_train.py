"""Final training from scratch: learns toy data, resumes exactly from its checkpoint, augments."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import math

import pytest
import torch

from edgenas.tasks import get_task
from edgenas.train import TrainConfig, evaluate, predict, train_model

KWS = get_task("kws")

from edgenas_toys import tiny_space, toy_split

CFG = TrainConfig(epochs=8, batch_size=16, lr=1e-2)


class Stop(Exception):
    pass


@pytest.fixture(scope="module")
def setup():
    space = tiny_space()
    spec = space.spec({"data.sample_rate": "8000", "data.n_mfcc": "10", "data.window": "40/20",
                       "stem.kernel": "3x3", "stem.stride": "2x2", "stem.width": "16",
                       "block0.op": "dw3x3", "block0.width": "16", "block1.op": "skip", "block1.width": "8"})
    shape = spec.data.feature_shape
    return space, spec, toy_split(96, shape, seed=1), toy_split(60, shape, seed=7)


def _model(space, spec):
    torch.manual_seed(0)
    return space.build(spec)


def test_training_learns_above_chance(setup) -> None:
    space, spec, tr, te = setup
    model = _model(space, spec)
    before = evaluate(model, te.x, te.y, KWS)
    events: list[tuple[str, dict[str, Any]]] = []
    info = train_model(model, tr.x, tr.y, CFG, KWS, seed=0, sink=lambda e, **f: events.append((e, f)),
                       eval_set=(te.x, te.y))
    after = evaluate(model, te.x, te.y, KWS)
    assert after > 0.6 and before < 0.5  # 3 balanced classes: chance is 1/3 (seeds 0-4 reach 0.68-1.0)
    h = info["history"]
    assert [r["epoch"] for r in h] == list(range(1, 9))
    assert h[-1]["loss"] < h[0]["loss"]
    assert h[-1]["eval_acc"] == pytest.approx(after)
    assert info["seconds"] > 0
    assert not model.training  # left in eval mode
    assert [f["epoch"] for e, f in events if e == "train.epoch"] == list(range(1, 9))


def test_checkpoint_resume_is_exact(setup, tmp_path: Path) -> None:
    space, spec, tr, _ = setup
    cfg = replace(CFG, epochs=4)
    straight = _model(space, spec)
    ref = train_model(straight, tr.x, tr.y, cfg, KWS, seed=0)

    ck = tmp_path / "final.pt"

    def stop_after_3(event: str, **f: Any) -> None:
        if event == "train.epoch" and f["epoch"] == 3:
            raise Stop

    interrupted = _model(space, spec)
    with pytest.raises(Stop):
        train_model(interrupted, tr.x, tr.y, cfg, KWS, seed=0, checkpoint=ck, sink=stop_after_3)
    assert torch.load(ck, weights_only=False)["epoch"] == 2
    assert not list(tmp_path.glob("*.tmp"))

    events: list[tuple[str, dict[str, Any]]] = []
    resumed = _model(space, spec)  # a fresh process would start from a fresh model
    info = train_model(resumed, tr.x, tr.y, cfg, KWS, seed=0, checkpoint=ck, sink=lambda e, **f: events.append((e, f)))
    assert ("train.resumed", {"epoch": 2, "label": "final training"}) in events
    assert [f["epoch"] for e, f in events if e == "train.epoch"] == [3, 4]
    assert [r["loss"] for r in info["history"]] == [r["loss"] for r in ref["history"]]
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(ck, weights_only=False)["epoch"] == 4


def test_augment_shapes_and_identity() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 1, 20, 10)
    x0 = x.clone()
    off = KWS.augment(x, TrainConfig(time_shift=0.0, spec_mask=0), g)
    assert torch.equal(off, x) and off is not x
    on = KWS.augment(x, TrainConfig(time_shift=0.2, spec_mask=2), g)
    assert on.shape == x.shape and torch.equal(x, x0)  # the input is never modified
    assert not torch.equal(on, x)
    # a time shift only moves frames (and zero-fills): every output frame is an input frame or zeros
    shifted = KWS.augment(x, TrainConfig(time_shift=0.2, spec_mask=0), torch.Generator().manual_seed(1))
    for i in range(len(x)):
        for t in range(20):
            frame = shifted[i, 0, t]
            assert bool((frame == 0).all()) or any(torch.equal(frame, x[i, 0, s]) for s in range(20))


def test_predict_and_accuracy(setup) -> None:
    space, spec, _, te = setup
    model = _model(space, spec)
    logits = predict(model, te.x, batch=7)
    assert logits.shape == (60, 3)
    assert evaluate(model, te.x, te.y, KWS) == pytest.approx(float((logits.argmax(1) == te.y).float().mean()))
    assert math.isnan(evaluate(model, te.x[:0], te.y[:0], KWS))
