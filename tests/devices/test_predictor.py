"""The learned latency predictor: encoding, fitting, differentiable expectation, files."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from edgenas.devices.latency_table import LatencyTable
from edgenas.devices.predictor import (LatencyPredictor, PredictedLatency, SpecEncoder, errors, layer_features,
                                       layer_group)
from edgenas.errors import ConfigError
from edgenas.spaces import get_space
from edgenas.spaces.kws_dscnn import KWSSpaceConfig


@pytest.fixture(scope="module")
def space():
    return get_space("kws-dscnn", num_classes=12)


def _table(space) -> LatencyTable:
    """A synthetic but structured table: ms grows with MACs, plus a per-layer cost."""
    entries = {d.key(): 0.004 + d.macs * 2e-8 for d in space.all_layers()}
    return LatencyTable("dev", "1", 1, "onnx-int8", entries, overhead_ms=0.003)


def _truth(space, spec, table) -> float:
    """A 'device' whose latency is a sum over layers the table does not know exactly."""
    t = table.overhead_ms + 0.01
    for d in space.layers(spec):
        g = layer_group(d)
        t += 0.6 * table.layer_ms(d) + (0.004 if g == "dw" else 0.001) + d.out_shape[0] * d.out_shape[1] * 1e-7
    if spec.data.n_mfcc == 40:
        t += 0.02  # a data-configuration effect only the one-hot slots can carry
    return t


def _data(space, n, seed=0):
    rng = random.Random(seed)
    table = _table(space)
    enc = SpecEncoder.for_space(space)
    specs = [space.sample(rng) for _ in range(n)]
    x = np.stack([enc.encode(space, s, table) for s in specs])
    y = np.array([_truth(space, s, table) for s in specs])
    return enc, table, specs, x, y


def test_encoding_layout_and_one_hot(space):
    enc, table, specs, x, _ = _data(space, 5)
    assert x.shape == (5, len(enc.names))
    assert enc.names[0] == "table_ms"
    spec = specs[0]
    row = x[0]
    assert row[0] == pytest.approx(table.model_ms(space.layers(spec)))
    sel = space.selection(spec)
    for i, (p, o) in enumerate(enc.slots):
        assert row[enc.n_numeric + i] == (1.0 if sel[p] == o else 0.0)
    n_points = len(space.choice_points())
    assert row[enc.n_numeric:].sum() == n_points
    assert enc.missing(space) == []


def test_fit_recovers_an_additive_device(space):
    enc, table, _, x, y = _data(space, 300)
    _, _, _, xt, yt = _data(space, 100, seed=1)
    model = LatencyPredictor.fit(enc, x, y)
    e = errors(model.predict_ms(xt), yt)
    assert e["within_10pct"] >= 0.95 and e["mape"] < 0.03, e
    assert errors([table.model_ms(space.layers(s)) for s in [space.sample(random.Random(1))]], yt[:1])["mape"] > 0.05


def test_expected_cost_is_exact_at_one_hot_and_differentiable(space):
    enc, table, specs, x, y = _data(space, 200)
    model = LatencyPredictor.fit(enc, x, y)
    lat = PredictedLatency(space, table, model)
    for spec in specs[:5]:
        probs = space.one_hot(spec)
        assert float(lat.expected_cost(probs)) == pytest.approx(lat.cost(spec), rel=1e-5)
    logits = {p.name: torch.zeros(len(p.options), requires_grad=True) for p in space.choice_points()}
    probs = {k: torch.softmax(v, 0) for k, v in logits.items()}
    out = lat.expected_cost(probs)
    out.backward()
    assert logits["stem.width"].grad is not None and logits["stem.width"].grad.abs().sum() > 0
    # uniform probabilities: the expectation is the mean over all specs of a linear model → sampled mean
    rng = random.Random(5)
    sampled = np.mean([lat.cost(space.sample(rng)) for _ in range(3000)])
    assert float(out.detach()) == pytest.approx(sampled, rel=0.03)


def test_save_load_roundtrip_and_bad_files(space, tmp_path: Path):
    enc, table, specs, x, y = _data(space, 100)
    model = LatencyPredictor.fit(enc, x, y)
    model.metadata = {"device": "dev", "samples": 100}
    path = model.save(tmp_path / "p.json")
    assert not list(tmp_path.glob(".*tmp"))
    again = LatencyPredictor.load(path)
    assert np.allclose(again.predict_ms(x), model.predict_ms(x))
    assert again.metadata["samples"] == 100
    d = json.loads(path.read_text())
    assert d["format_version"] == 1 and "weights" in d and len(d["features"]) == len(d["weights"])
    d["format_version"] = 99
    (tmp_path / "v.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="format version"):
        LatencyPredictor.load(tmp_path / "v.json")
    (tmp_path / "bad.json").write_text(path.read_text()[:200])
    with pytest.raises(ConfigError, match="cannot read"):
        LatencyPredictor.load(tmp_path / "bad.json")
    d["format_version"] = 1
    d["weights"] = d["weights"][:-3]
    (tmp_path / "short.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="damaged"):
        LatencyPredictor.load(tmp_path / "short.json")


def test_subspace_is_priced_and_unknown_options_are_refused(space):
    enc, table, specs, x, y = _data(space, 100)
    model = LatencyPredictor.fit(enc, x, y)
    sub = get_space("kws-dscnn", num_classes=12, config=KWSSpaceConfig(widths=(16, 32)), max_sample_rate=8000)
    lat = PredictedLatency(sub, table, model)
    spec = sub.sample(random.Random(0))
    assert lat.cost(spec) > 0
    other = get_space("kws-dscnn", num_classes=12, config=KWSSpaceConfig(widths=(8, 16)))
    with pytest.raises(ConfigError, match="no slot for"):
        PredictedLatency(other, table, model)


def test_layer_features_and_groups(space):
    table = _table(space)
    spec = space.sample(random.Random(3))
    groups = [layer_group(d) for d in space.layers(spec)]
    assert groups[0] == "conv" and groups[-2:] == ["global_avgpool", "linear"]
    assert set(groups[1:-2]) <= {"dw", "pw"}
    f = layer_features(space.layers(spec)[0], table)
    assert f[-1] == 1.0 and f[1] == pytest.approx(space.layers(spec)[0].macs / 1e6)


def test_margin_raises_both_faces(space):
    enc, table, specs, x, y = _data(space, 100)
    model = LatencyPredictor.fit(enc, x, y)
    plain = PredictedLatency(space, table, model)
    safe = PredictedLatency(space, table, model, margin=0.1)
    spec = specs[0]
    assert safe.cost(spec) == pytest.approx(1.1 * plain.cost(spec)) and safe.predict(spec) == plain.cost(spec)
    probs = space.one_hot(spec)
    assert float(safe.expected_cost(probs)) == pytest.approx(1.1 * float(plain.expected_cost(probs)), rel=1e-6)
    e = errors([1.0, 1.0, 1.0], [1.2, 0.9, 1.0])
    assert e["underprediction_p90"] == pytest.approx(0.16, abs=0.01)


def test_layer_features_count_every_call() -> None:
    """A layer run once per tile (``LayerDesc.calls``) has per-input features: each is k times the
    single call's, the table's time included, so the predictor sees what a frame costs."""
    from dataclasses import replace

    from edgenas.spec import LayerDesc

    d = LayerDesc("c", "conv2d", (8, 16, 16), (8, 16, 16), (3, 3), (1, 1), (1, 1, 1, 1), 1, "relu")
    table = LatencyTable("dev", "1", 1, "onnx-int8", {d.key(): 0.3}, overhead_ms=0.1)
    np.testing.assert_allclose(layer_features(replace(d, calls=5), table), 5 * layer_features(d, table))
