"""The kws-tcn space by hand (the generic contract tests in test_spaces.py run on it too, being
parametrized over every registered space): shapes, supernet ↔ plain network, exact expected
costs, config plumbing, exports, and one short search through the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edgenas import config as C
from edgenas import cost
from edgenas.errors import ConfigError
from edgenas.spaces import SPACES, build, get_space
from edgenas.spaces.kws_tcn import KWSTCNSpace, KWSTCNSpaceConfig, parse_op
from edgenas.spec import ArchSpec

from dscnn_toy import randomize_bn
from edgenas_toys import TINY_TCN, all_specs, random_specs, tiny_tcn_space

NUM_CLASSES = 5
TINY = TINY_TCN


def tiny(**overrides: object) -> KWSTCNSpace:
    return tiny_tcn_space(NUM_CLASSES, **overrides)


def _input(spec: ArchSpec, n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, *spec.data.feature_shape, generator=torch.Generator().manual_seed(seed))


def _spec(space: KWSTCNSpace, **choices: str) -> ArchSpec:
    sel = space.selection(random_specs(space, 1, seed=11)[0])
    sel.update(choices)
    return space.spec(sel)


def test_registered() -> None:
    assert "kws-tcn" in SPACES
    assert isinstance(get_space("kws-tcn", num_classes=3), KWSTCNSpace)


def test_layers_by_hand() -> None:
    space = KWSTCNSpace(12, KWSTCNSpaceConfig(n_blocks=3))
    spec = space.spec({"data.sample_rate": "16000", "data.n_mfcc": "20", "data.window": "30/10",
                       "stem.kernel": "3", "stem.stride": "1", "stem.width": "16",
                       "block0.op": "conv9", "block0.stride": "2", "block0.width": "24",
                       "block1.op": "skip", "block1.stride": "2", "block1.width": "48",
                       "block2.op": "dw5", "block2.stride": "1", "block2.width": "32"})
    layers = space.layers(spec)
    assert [d.name for d in layers] == ["stem", "block0.conv", "block1.down", "block2.dw", "block2.pw", "pool", "fc"]
    stem, conv, down, dw, pw, pool, fc = layers
    assert stem.in_shape == (1, 98, 20) and stem.out_shape == (16, 98, 1)
    assert stem.kernel == (3, 20) and stem.stride == (1, 1) and stem.pad == (1, 1, 0, 0)  # VALID in frequency
    assert conv.in_shape == (16, 98, 1) and conv.out_shape == (24, 49, 1)
    assert conv.kernel == (9, 1) and conv.stride == (2, 1) and conv.pad == (3, 4, 0, 0) and conv.groups == 1
    assert down.in_shape == (24, 49, 1) and down.out_shape == (24, 25, 1)  # skip at stride 2: keeps channels
    assert down.kernel == (2, 1) and down.stride == (2, 1) and down.groups == 24 and down.pad == (0, 1, 0, 0)
    assert dw.out_shape == (24, 25, 1) and dw.groups == 24 and dw.kernel == (5, 1) and dw.pad == (2, 2, 0, 0)
    assert pw.out_shape == (32, 25, 1) and pw.kernel == (1, 1)
    assert pool.in_shape == (32, 25, 1) and fc.in_shape == (32, 1, 1) and fc.out_shape == (12, 1, 1)
    assert stem.macs == 16 * 98 * 3 * 20 and conv.macs == 24 * 49 * 16 * 9
    assert cost.params(space).cost(spec) == sum(d.params for d in layers)
    assert space.describe(spec) == ("16000 Hz, 20 MFCC, 30/10 ms | stem k3/s1→16 | conv9/s2→24 | skip/s2 | "
                                    "dw5/s1→32")
    # skip at stride 1 is no layer at all
    flat = space.spec(dict(space.selection(spec), **{"block1.stride": "1"}))
    assert [d.name for d in space.layers(flat)] == ["stem", "block0.conv", "block2.dw", "block2.pw", "pool", "fc"]


@pytest.mark.parametrize("strides", [(1,), (1, 2), (2,)])
def test_layer_shapes_for_every_data_option(strides: tuple[int, ...]) -> None:
    space = KWSTCNSpace(NUM_CLASSES, KWSTCNSpaceConfig(stem_strides=strides))
    assert len(space.data_configs()) == 12
    rng = random.Random(0)
    for data in space.data_configs():
        t, f = data.feature_shape
        for _ in range(3):
            sel = space.selection(space.sample(rng))
            sel.update(space.data_labels(data))
            spec = space.spec(sel)
            layers = space.layers(spec)
            stem = layers[0]
            s0 = int(spec.choices["stem.stride"])
            assert stem.in_shape == (1, t, f) and stem.kernel[1] == f
            length = math.ceil(t / s0)
            assert stem.out_shape[1:] == (length, 1)
            for i in range(space.cfg.n_blocks):  # every block's stride applies, skip included
                length = math.ceil(length / int(spec.choices[f"block{i}.stride"]))
            assert layers[-2].in_shape[1:] == (length, 1)
            for a, b in zip(layers[:-2], layers[1:-1]):  # a chain: each layer eats the previous output
                assert a.out_shape == b.in_shape, (a.name, b.name)
            assert all(d.out_shape[2] == 1 for d in layers if d.kind == "conv2d")  # frequency collapsed
            model = space.build(spec).eval()
            with torch.no_grad():
                out = model(_input(spec, 2))
            assert out.shape == (2, NUM_CLASSES) and torch.isfinite(out).all()


def test_build_and_module_level_build_agree() -> None:
    space = get_space("kws-tcn", num_classes=NUM_CLASSES)
    spec = random_specs(space, 1, seed=3)[0]
    torch.manual_seed(0)
    a = space.build(spec).state_dict()
    torch.manual_seed(0)
    b = build(spec).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert space.selection(ArchSpec.from_json(spec.to_json())) == space.selection(spec)


def _supernet_specs(space: KWSTCNSpace) -> list[ArchSpec]:
    picked = [
        _spec(space, **{"block0.op": "conv5", "block0.stride": "2", "block0.width": "8",
                        "block1.op": "dw3", "block1.stride": "1", "block1.width": "16"}),
        _spec(space, **{"block0.op": "skip", "block0.stride": "2", "block1.op": "conv5", "block1.stride": "2"}),
        _spec(space, **{"block0.op": "skip", "block0.stride": "1", "block1.op": "dw3", "block1.stride": "2",
                        "stem.kernel": "3", "stem.width": "8"}),
        _spec(space, **{"block0.op": "dw3", "block0.stride": "1", "block1.op": "skip", "block1.stride": "2"}),
    ]
    return picked + random_specs(space, 6, seed=12)


@pytest.mark.parametrize("hard", [True, False], ids=["sampled", "relaxed"])
def test_supernet_at_one_hot_equals_plain_network(hard: bool) -> None:
    """Under a one-hot selection, sampled (single path) or relaxed (mixture with zero weights), the
    supernet computes exactly the plain network of the spec carrying the supernet's weights."""
    space = tiny()
    torch.manual_seed(0)
    net = randomize_bn(space.supernet(), seed=1)
    for spec in _supernet_specs(space):
        d = space.data_configs().index(spec.data)
        x = _input(spec, 3)
        with torch.no_grad():
            got = net(x, d, space.one_hot(spec), hard)
            plain = net.extract(spec, compact=hard).eval()
            ref = plain(x)
        assert isinstance(plain, type(space.build(spec)))
        assert torch.allclose(got, ref, atol=1e-5), (space.describe(spec), (got - ref).abs().max())


def test_supernet_compacts_skipped_blocks_in_hard_mode() -> None:
    space = tiny()
    net = randomize_bn(space.supernet())
    late = _spec(space, **{"block0.op": "skip", "block0.stride": "1", "block1.op": "conv5", "block1.stride": "1"})
    early = _spec(space, **{"block0.op": "conv5", "block0.stride": "1", "block0.width": late.choices["block1.width"],
                            "block1.op": "skip", "block1.stride": "1"})
    d = space.data_configs().index(late.data)
    x = _input(late)
    with torch.no_grad():
        y_late, y_early = (net(x, d, space.one_hot(s), True) for s in (late, early))
        z_late = net(x, d, space.one_hot(late), False)
    assert torch.allclose(y_late, y_early, atol=1e-6)  # both run one conv5 block, on slot 0
    assert not torch.allclose(z_late, y_late, atol=1e-4)  # relaxed: block1 runs on slot 1


def test_supernet_relaxed_gates_train_every_relaxed_choice() -> None:
    space = tiny()
    net = space.supernet()
    spec = random_specs(space, 1, seed=4)[0]
    d = space.data_configs().index(spec.data)
    one_hot = space.one_hot(spec)
    gates = {p.name: (one_hot[p.name].clone() if p.sampled else torch.full((len(p.options),), 1 / len(p.options)))
             .requires_grad_() for p in space.choice_points()}
    out = net(_input(spec, 4), d, gates, False)
    torch.nn.functional.cross_entropy(out, torch.arange(4) % NUM_CLASSES).backward()
    for p in space.choice_points():
        if len(p.options) > 1:
            assert gates[p.name].grad is not None and float(gates[p.name].grad.abs().sum()) > 0, p.name
    with pytest.raises(ValueError, match="do not match data option"):
        net(torch.randn(1, 1, 30, 10), d, one_hot, True)


@pytest.mark.parametrize("model_fn", [cost.macs, cost.params, cost.flash, cost.peak_ram])
def test_expected_cost_at_one_hot_equals_cost(model_fn) -> None:
    space = get_space("kws-tcn", num_classes=NUM_CLASSES, config=KWSTCNSpaceConfig(stem_strides=(1, 2)))
    m = model_fn(space)
    for spec in random_specs(space, 12, seed=5) + list(space.cheapest_candidates())[:2]:
        assert float(m.expected_cost(space.one_hot(spec))) == pytest.approx(m.cost(spec), rel=1e-5), \
            space.describe(spec)


def test_cheapest_candidates_without_skip() -> None:
    space = tiny(block_ops=("conv5", "dw3"))
    for model_fn in (cost.macs, cost.peak_ram, cost.params):
        m = model_fn(space)
        assert min(m.cost(s) for s in space.cheapest_candidates()) <= min(m.cost(s) for s in all_specs(space))


def test_all_layers_cover_every_spec_of_the_tiny_space() -> None:
    space = tiny(stem_strides=(1, 2))
    keys = [d.key() for d in space.all_layers()]
    assert len(keys) == len(set(keys))
    missing = {d.name for s in all_specs(space) for d in space.layers(s) if d.key() not in set(keys)}
    assert not missing


@pytest.mark.parametrize(
    "cfg, fragment",
    [
        (replace(TINY, block_ops=("conv3x3",)), "unknown block op 'conv3x3'"),
        (replace(TINY, block_ops=("dw0",)), "unknown block op"),
        (replace(TINY, widths=(8, 8)), "duplicate options"),
        (replace(TINY, block_strides=()), "at least one option"),
        (replace(TINY, stem_kernels=(0, 3)), "must be positive"),
        (replace(TINY, n_mfcc=(10, 50)), "exceed n_mels=40"),
        (replace(TINY, windows=("40-20",)), "window must be 'win_ms/hop_ms'"),
    ],
)
def test_config_errors(cfg: KWSTCNSpaceConfig, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        KWSTCNSpace(NUM_CLASSES, cfg)


def test_parse_op() -> None:
    assert parse_op("conv9") == ("conv", 9) and parse_op("dw5") == ("dw", 5) and parse_op("skip") is None


def test_data_options_follow_native_rate() -> None:
    space = KWSTCNSpace(10, KWSTCNSpaceConfig(), max_sample_rate=8000)
    assert space.point("data.sample_rate").options == ("8000",)
    with pytest.raises(ConfigError, match="native rate 4000"):
        KWSTCNSpace(10, KWSTCNSpaceConfig(), max_sample_rate=4000)


# ---- config plumbing ---------------------------------------------------------------------------

def test_config_space_section_follows_space_name(tmp_path: Path) -> None:
    assert C.resolve().space == C.RunConfig().space and C.resolve().space_name == "kws-dscnn"
    # space.* keys before the space name, from a flag, a file or --set, all go to kws-tcn's options
    cfg = C.resolve(sets=["space.block_ops=conv9,skip", "space.stem_kernels=[3, 9]", "space_name=kws-tcn",
                          "space.n_blocks=2"])
    assert cfg.space_name == "kws-tcn" and isinstance(cfg.space, KWSTCNSpaceConfig)
    assert cfg.space.block_ops == ("conv9", "skip") and cfg.space.stem_kernels == (3, 9) and cfg.space.n_blocks == 2
    assert cfg.space.widths == KWSTCNSpaceConfig().widths
    f = tmp_path / "run.json"
    f.write_text(json.dumps({"space": {"block_strides": [2]}, "space_name": "kws-tcn"}))
    assert C.resolve(f).space.block_strides == (2,)
    assert C.resolve(sets=["space.widths=8,16"], flags={"space_name": "kws-tcn"}).space.widths == (8, 16)
    # config.json round-trips
    saved = json.loads(json.dumps(C.to_dict(cfg)))
    assert saved["space_name"] == "kws-tcn" and saved["space"]["block_ops"] == ["conv9", "skip"]
    assert C.from_dict(saved) == cfg
    # the run's space is built from it
    space = get_space(cfg.space_name, num_classes=3, config=cfg.space)
    assert space.point("block1.op").options == ("conv9", "skip")
    # switching back gives kws-dscnn's defaults; RunConfig(space_name=...) picks the right section
    assert C.apply(cfg, "space_name", "kws-dscnn").space == C.RunConfig().space
    assert C.RunConfig(space_name="kws-tcn").space == KWSTCNSpaceConfig()


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["space_name=kws-tcn", "space.stem_strides=2x1"], "invalid value '2x1' for space.stem_strides (expected int)"),
        (["space.stem_kernel=3", "space_name=kws-tcn"],
         "unknown config key 'space.stem_kernel'; did you mean stem_kernels"),
        (["space_name=kws-tcn", "space.widht=8"], "did you mean widths"),
        (["space_name=kws-tnc"], "unknown search space 'kws-tnc'; did you mean kws-tcn"),
    ],
)
def test_config_errors_are_one_line(sets: list[str], fragment: str) -> None:
    with pytest.raises(ConfigError) as ei:
        C.resolve(sets=sets)
    assert fragment in str(ei.value) and "\n" not in str(ei.value)


def test_config_rejects_another_space_s_options() -> None:
    with pytest.raises(ConfigError, match="do not belong to space kws-tcn"):
        C.RunConfig(space_name="kws-tcn", space=replace(C.RunConfig().space, widths=(8,)))


def test_cli_bad_space_key_is_one_line(tmp_path: Path, cli) -> None:
    res = cli(["search", "--space", "kws-tcn", "--runs-dir", str(tmp_path), "--set", "space.stem_kernels=3x3",
               "--quiet"])
    assert res.code == 2 and res.out == ""
    lines = res.err_lines()
    assert len(lines) == 1 and "invalid value '3x3' for space.stem_kernels" in lines[0], res.err
    assert not (tmp_path / "kws").exists()
    res = cli(["calibrate", "--device", "onnxruntime-cpu", "--space", "kws-tcn", "--set", "space.block_op=conv9"])
    assert res.code == 2 and len(res.err_lines()) == 1
    assert "unknown config key 'space.block_op'; did you mean block_ops" in res.err


# ---- exports -----------------------------------------------------------------------------------

def test_plain_network_exports_to_onnx_and_int8_tflite_without_transpose(tmp_path: Path) -> None:
    from edgenas.export.onnx_export import check_parity, export_onnx_fp32

    space = KWSTCNSpace(NUM_CLASSES, replace(TINY, n_blocks=3, block_ops=("conv9", "dw5", "skip"), widths=(8, 16)))
    spec = space.spec({"data.sample_rate": "8000", "data.n_mfcc": "10", "data.window": "40/20", "stem.kernel": "3",
                       "stem.stride": "1", "stem.width": "8",
                       "block0.op": "conv9", "block0.stride": "2", "block0.width": "16",  # asymmetric pad
                       "block1.op": "skip", "block1.stride": "2", "block1.width": "8",  # strided 1×1 depthwise
                       "block2.op": "dw5", "block2.stride": "1", "block2.width": "8"})
    torch.manual_seed(0)
    model = randomize_bn(space.build(spec))
    shape = (1, 1, *spec.data.feature_shape)
    x = np.random.default_rng(0).standard_normal((16, *shape[1:])).astype(np.float32)
    onnx_path = export_onnx_fp32(model, shape, tmp_path / "m.fp32.onnx")
    assert check_parity(model, onnx_path, x) <= 1e-4
    if importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("TFLite part needs the tflite extra")
    from edgenas.export.tflite_export import export_tflite, run_tflite, verify_tflite

    path = export_tflite(model, shape, tmp_path / "m.int8.tflite", quant="int8", calibration=x)
    r = verify_tflite(path)
    assert r["transpose_ops"] == 0 and "TRANSPOSE" not in r["ops"]
    assert r["fully_int8"] and r["int8_io"], r
    assert r["inputs"][0]["shape"] == [1, 49, 10, 1]
    assert r["op_counts"]["DEPTHWISE_CONV_2D"] == 2 and r["op_counts"]["MEAN"] == 1
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    q = run_tflite(path, x)
    assert q.shape == ref.shape and np.abs(q - ref).max() < 0.25 * np.abs(ref).max()


# ---- one short search through the CLI ----------------------------------------------------------

def test_cli_search_with_kws_tcn(tone_fsdd: Path, tmp_path: Path, cli, shared_env) -> None:
    runs = tmp_path / "runs"
    res = cli(["search", "--task", "kws", "--space", "kws-tcn", "--data", str(tone_fsdd), "--test-speakers", "s2",
               "--search-epochs", "2", "--epochs", "2", "--max-ram-kb", "512", "--runs-dir", str(runs),
               "--name", "tcn", "--json", "--quiet",
               "--set", "space.widths=8,16", "--set", "space.n_blocks=2", "--set", "space.n_mfcc=10",
               "--set", "space.windows=40/20", "--set", "space.stem_kernels=3,5", "--set", "measure.runs=20"])
    assert res.code == 0, res.err[-3000:]
    m = res.json()
    run = runs / "kws" / "tcn"
    spec = ArchSpec.from_json((run / "arch.json").read_text())
    assert spec.space == "kws-tcn" and m["arch_hash"] == spec.hash()
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["space_name"] == "kws-tcn" and cfg["space"]["stem_kernels"] == [3, 5]
    assert m["exports"]["tflite-int8"] == "ok" and m["exports"]["onnx-int8"] == "ok"
    assert m["budgets"]["ram"]["measured"] > 0
    export = json.loads((run / "export" / "report.json").read_text())
    assert export["models"]["tflite-int8"]["transpose_ops"] == 0
    assert "block0.op" in (run / "report.md").read_text()
    # a resumed finished run reads its kws-tcn config back
    again = cli(["search", "--runs-dir", str(runs), "--name", "tcn", "--resume", "--json", "--quiet"])
    assert again.code == 0 and again.json() == m


def test_strided_skip_chain_loads_in_litert_with_xnnpack(tmp_path: Path) -> None:
    """A strided skip is a depthwise conv with stride taps: XNNPACK could not prepare the 1-tap
    stride-2 version (a whole calibration stopped on such a network), this one loads and runs."""
    pytest.importorskip("tensorflow")
    from ai_edge_litert.interpreter import Interpreter

    from edgenas.export.micro import save_chain_model

    space = get_space("kws-tcn", num_classes=12)
    spec = space.spec({**{p.name: p.options[0] for p in space.choice_points()},
                       "data.n_mfcc": "40", "stem.kernel": "3", "stem.width": "16",
                       **{f"block{i}.op": "skip" for i in range(4)},
                       **{f"block{i}.stride": "2" for i in range(4)}})
    layers = space.layers(spec)
    downs = [d for d in layers if d.name.endswith(".down")]
    assert len(downs) == 4 and all(d.kernel == (2, 1) and d.stride == (2, 1) for d in downs)
    path = save_chain_model(layers, "tflite-int8", tmp_path / "skips.tflite")
    it = Interpreter(str(path), num_threads=1)
    it.allocate_tensors()
    it.invoke()
