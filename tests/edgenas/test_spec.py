"""DataConfig arithmetic and validation, ArchSpec JSON and hashing, LayerDesc MACs/params."""

from __future__ import annotations

import json

import pytest

from edgenas.errors import ConfigError
from edgenas.spec import ArchSpec, DataConfig, LayerDesc, canonical_json, stable_hash


# ---- DataConfig ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "rate, win, hop, win_len, hop_len, n_fft, frames",
    [
        (16000, 40.0, 20.0, 640, 320, 1024, 49),  # 1 + (16000 - 640) // 320
        (8000, 30.0, 10.0, 240, 80, 256, 98),  # 1 + (8000 - 240) // 80
        (16000, 30.0, 10.0, 480, 160, 512, 98),
        (8000, 40.0, 20.0, 320, 160, 512, 49),
        (16000, 32.0, 16.0, 512, 256, 512, 61),  # a power-of-two window is its own FFT size
    ],
)
def test_data_config_frame_arithmetic(rate: int, win: float, hop: float, win_len: int, hop_len: int,
                                      n_fft: int, frames: int) -> None:
    d = DataConfig(sample_rate=rate, n_mfcc=10, win_ms=win, hop_ms=hop)
    assert (d.win_length, d.hop_length, d.n_fft, d.n_frames) == (win_len, hop_len, n_fft, frames)
    assert d.clip_samples == rate
    assert d.feature_shape == (frames, 10)
    assert d.n_fft & (d.n_fft - 1) == 0 and d.n_fft >= d.win_length


def test_data_config_short_clip() -> None:
    d = DataConfig(sample_rate=8000, win_ms=40, hop_ms=20, clip_ms=500)
    assert d.clip_samples == 4000
    assert d.n_frames == 1 + (4000 - 320) // 160 == 24


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"sample_rate": 0}, "invalid data config"),
        ({"n_mfcc": -1}, "invalid data config"),
        ({"n_mels": 0}, "invalid data config"),
        ({"n_mfcc": 41, "n_mels": 40}, "must not exceed n_mels"),
        ({"hop_ms": 30.0, "win_ms": 20.0}, "hop_ms <= win_ms"),
        ({"hop_ms": 0.0}, "0 < hop_ms"),
        ({"win_ms": 1000.0, "hop_ms": 10.0}, "win_ms < clip_ms"),
    ],
)
def test_data_config_validation(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as ei:
        DataConfig(**kwargs)
    assert "\n" not in str(ei.value)


def test_data_config_dict_round_trip_and_key() -> None:
    d = DataConfig(sample_rate=8000, n_mfcc=20, win_ms=30.0, hop_ms=10.0)
    assert DataConfig.from_dict(d.to_dict()) == d
    assert d.key() == "sr8000_mfcc20_mel40_w30_h10_c1000"
    assert d.key() != DataConfig(sample_rate=8000, n_mfcc=20, win_ms=30.0, hop_ms=15.0).key()


# ---- ArchSpec --------------------------------------------------------------------------------

def _spec(**changes: object) -> ArchSpec:
    base = dict(task="kws", space="kws-dscnn", space_version=1, num_classes=12,
                data=DataConfig(sample_rate=16000, n_mfcc=10, win_ms=40.0, hop_ms=20.0),
                choices={"stem.kernel": "10x4", "stem.stride": "2x2", "stem.width": "64", "block0.op": "dw3x3"})
    base.update(changes)
    return ArchSpec(**base)  # type: ignore[arg-type]


def test_arch_spec_json_round_trip() -> None:
    s = _spec()
    text = s.to_json()
    back = ArchSpec.from_json(text)
    assert back == s and back.hash() == s.hash()
    assert json.loads(text)["data"]["n_mfcc"] == 10
    assert ArchSpec.from_json(s.to_json(indent=None)) == s


def test_arch_spec_hash_is_stable() -> None:
    s = _spec()
    assert s.hash() == _spec().hash()
    assert len(s.hash()) == 16 and int(s.hash(), 16) >= 0
    # insertion order of the choices does not matter
    rev = _spec(choices=dict(reversed(list(s.choices.items()))))
    assert rev.hash() == s.hash() and hash(rev) == hash(s)
    # the hash is a pure function of the canonical JSON (so it survives processes and versions)
    assert s.hash() == stable_hash(s.to_dict())
    assert canonical_json({"b": 1, "a": [1, 2]}) == '{"a":[1,2],"b":1}'
    assert s.hash() == "6bf30c6df23d5011"  # golden: the run store keys results by it


@pytest.mark.parametrize(
    "change",
    [
        {"task": "kws2"},
        {"space": "other"},
        {"space_version": 2},
        {"num_classes": 10},
        {"data": DataConfig(sample_rate=8000, n_mfcc=10, win_ms=40.0, hop_ms=20.0)},
        {"data": DataConfig(sample_rate=16000, n_mfcc=20, win_ms=40.0, hop_ms=20.0)},
        {"data": DataConfig(sample_rate=16000, n_mfcc=10, win_ms=30.0, hop_ms=20.0)},
        {"choices": {"stem.kernel": "10x4", "stem.stride": "2x2", "stem.width": "32", "block0.op": "dw3x3"}},
        {"choices": {"stem.kernel": "10x4", "stem.stride": "2x2", "stem.width": "64", "block0.op": "skip"}},
        {"choices": {"stem.kernel": "10x4", "stem.stride": "2x2", "stem.width": "64"}},
    ],
)
def test_arch_spec_any_change_changes_hash(change: dict) -> None:
    assert _spec(**change).hash() != _spec().hash()
    assert _spec(**change) != _spec()


def test_equal_specs_have_equal_hashes() -> None:
    as_float = _spec()
    d = as_float.to_dict()
    d["data"]["win_ms"], d["data"]["hop_ms"] = 40, 20  # what a user writes in arch.json
    as_int = ArchSpec.from_dict(d)
    assert as_int == as_float
    assert as_int.hash() == as_float.hash()


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda d: d.pop("choices"), "not a valid ArchSpec"),
        (lambda d: d.update(num_classes="twelve"), "not a valid ArchSpec"),
        (lambda d: d["data"].update(bogus=1), "not a valid ArchSpec"),
        (lambda d: d["data"].update(n_mfcc=80), "must not exceed n_mels"),
    ],
)
def test_arch_spec_from_dict_errors(mutate, fragment: str) -> None:
    d = _spec().to_dict()
    mutate(d)
    with pytest.raises(ConfigError, match=fragment):
        ArchSpec.from_dict(d)


def test_arch_spec_from_json_error() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        ArchSpec.from_json("{not json")


# ---- LayerDesc -------------------------------------------------------------------------------

def test_layer_desc_conv_by_hand() -> None:
    d = LayerDesc("c", "conv2d", (4, 10, 10), (8, 5, 5), (3, 3), (2, 2), (1, 1, 1, 1))
    assert d.macs == 8 * 5 * 5 * 4 * 3 * 3 == 7200
    assert d.weights == 8 * 4 * 9 == 288
    assert d.biases == 8
    assert d.params == 296
    assert LayerDesc("c", "conv2d", (4, 10, 10), (8, 5, 5), (3, 3), bias=False).params == 288


def test_layer_desc_depthwise_pointwise_linear_pool_by_hand() -> None:
    dw = LayerDesc("dw", "conv2d", (16, 25, 10), (16, 25, 10), (3, 3), groups=16)
    assert dw.macs == 16 * 25 * 10 * 9 == 36000
    assert dw.params == 16 * 9 + 16
    pw = LayerDesc("pw", "conv2d", (16, 25, 10), (32, 25, 10))
    assert pw.macs == 32 * 250 * 16 == 128000
    assert pw.params == 32 * 16 + 32
    fc = LayerDesc("fc", "linear", (32, 1, 1), (12, 1, 1))
    assert fc.macs == 384 and fc.params == 396
    pool = LayerDesc("pool", "global_avgpool", (32, 25, 10), (32, 1, 1), bias=False)
    assert pool.macs == 8000 and pool.params == 0
    with pytest.raises(ValueError, match="unknown layer kind"):
        LayerDesc("x", "lstm", (1, 1, 1), (1, 1, 1)).macs


def test_layer_desc_key_ignores_name_only() -> None:
    a = LayerDesc("a", "conv2d", (4, 10, 10), (8, 10, 10), (3, 3), pad=(1, 1, 1, 1))
    b = LayerDesc("b", "conv2d", (4, 10, 10), (8, 10, 10), (3, 3), pad=(1, 1, 1, 1))
    c = LayerDesc("a", "conv2d", (4, 10, 10), (8, 10, 10), (3, 3), pad=(0, 2, 1, 1))
    assert a.key() == b.key() != c.key()
    assert a.to_dict()["name"] == "a" and a.to_dict()["pad"] == (1, 1, 1, 1)
