"""The ``sr`` task on the real SR images (../shared/data/sisr): its splits, the PSNR of a tiled test
split against the stitched image, the loss and fidelity, the front end in both formats against the
training transform, and the exported int8 TFLite graph's peak RAM against edgenas's estimate.

Real parts only: the real PNGs, real ONNX/TFLite export and int8 quantization, ONNX Runtime and LiteRT.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgenas.datasets.sisr import lr_hr_pair, psnr, run_tiled, to_chw_float, to_uint8_hwc
from edgenas.tasks import get_task
from edgenas.tasks.sr_config import SRConfig

SISR = Path(__file__).resolve().parents[3] / "shared" / "data" / "sisr"

pytestmark = pytest.mark.skipif(not SISR.is_dir(), reason="../shared/data/sisr is missing")


@pytest.fixture(scope="module")
def ds():
    task = get_task("sr")
    return task.open_dataset(SimpleNamespace(data=str(SISR), seed=0), sink=lambda *a, **k: None, cache_dir=None)


def test_default_layout_splits_and_patches(ds) -> None:
    task = get_task("sr")
    assert {k: len(v) for k, v in ds.splits.items()} == {"train": 68, "val": 14, "test": 5}
    assert all("/Set5/" in it.path for it in ds.splits["test"])
    data = SRConfig(scale=2, colour="y", tile=32, overlap=8)
    tr = task.load_split(ds, "train", data, cache_dir=None, sink=lambda *a, **k: None)
    assert tr.x.shape[1:] == (1, 32, 32) and tr.y.shape[1:] == (1, 64, 64) and tr.groups is None
    assert tr.x.min() >= 0 and tr.x.max() <= 1 and not np.isnan(tr.y).any()
    va = task.load_split(ds, "val", data, cache_dir=None, sink=lambda *a, **k: None)
    assert va.x.shape[1:] == tr.x.shape[1:]  # train+val concatenate for the final training
    # the tile does not change the patches (they are cached per scale and colour)
    other = task.load_split(ds, "train", SRConfig(scale=2, colour="y", tile=64), cache_dir=None, sink=print)
    assert other is tr


@pytest.mark.parametrize("colour,tile", [("y", 32), ("rgb", 64)])
def test_tiled_test_split_scores_the_stitched_image(ds, colour: str, tile: int) -> None:
    """score() over the test tiles (NaN outside each kept centre and in the shaved border) is the
    mean PSNR of the whole stitched images: the number the SR literature reports."""
    task = get_task("sr")
    data = SRConfig(scale=2, colour=colour, tile=tile, overlap=4)
    te = task.load_split(ds, "test", data, cache_dir=None, sink=lambda *a, **k: None)
    assert te.x.shape[1:] == data.input_shape and te.y.shape[1:] == data.output_shape
    assert te.groups is not None and sorted(set(te.groups.tolist())) == [0, 1, 2, 3, 4]

    def model(x: np.ndarray) -> np.ndarray:  # any deterministic tile model: a blurred nearest upscale
        t = torch.from_numpy(np.asarray(x, dtype=np.float32))
        return (torch.nn.functional.interpolate(t, scale_factor=2, mode="nearest") * 0.97 + 0.01).numpy()

    got = task.score(model(te.x), te.y, te.groups)
    want = []
    for im in ds.images("test"):
        lr, hr = lr_hr_pair(im, 2, colour)
        want.append(psnr(np.clip(run_tiled(model, lr, tile, 4, 2), 0, 1), hr, 2))
    assert got == pytest.approx(float(np.mean(want)), abs=1e-6)
    # the raw tiles are what the board cuts: uint8 RGB whose Y (or RGB) / 255 is the model input
    raw = task.raw_split(ds, "test", data, cache_dir=None)
    assert raw.dtype == np.uint8 and raw.shape == (len(te.x), data.tile_in, data.tile_in, 3)
    ref = task.frontend().reference(raw, data)
    assert np.abs(ref - te.x).max() < 1e-6


def test_loss_ignores_nan_and_fidelity_is_the_db_drop() -> None:
    task = get_task("sr")
    y = torch.full((2, 1, 8, 8), float("nan"))
    y[:, :, 2:6, 2:6] = 0.5
    out = torch.full((2, 1, 8, 8), 0.6, requires_grad=True)
    loss = task.loss(out, y)
    assert float(loss.detach()) == pytest.approx(0.1, abs=1e-6)
    loss.backward()
    assert out.grad is not None and float(out.grad[:, :, 0, 0].abs().sum()) == 0.0  # masked pixels get no gradient
    yn, groups = y.numpy(), np.array([0, 0])
    ref, worse = np.full_like(yn, 0.51), np.full_like(yn, 0.52)
    assert task.score(ref, yn, groups) == pytest.approx(40.0, abs=1e-4)  # MSE 1e-4
    assert task.fidelity(worse, ref, yn, groups) == pytest.approx(40.0 - 10 * math.log10(1 / 4e-4), abs=1e-4)
    # per-example PSNR (search and training): the hits of a batch sum it
    assert float(task.hits(torch.from_numpy(ref), y)) == pytest.approx(80.0, abs=1e-4)


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
@pytest.mark.parametrize("colour", ["y", "rgb"])
def test_front_end_reproduces_the_training_inputs(ds, fmt: str, colour: str, tmp_path: Path) -> None:
    task = get_task("sr")
    data = SRConfig(scale=2, colour=colour, tile=32, overlap=8)
    fe = task.frontend()
    raw = task.raw_split(ds, "test", data, cache_dir=None)[:6]
    path = fe.export(data, fmt, tmp_path / f"fe.{fmt}")
    got = fe.run(path, raw)
    ref = fe.reference(raw, data)
    assert got.shape == ref.shape == (6, *data.input_shape)
    assert np.abs(got - ref).max() < 1e-5


def test_int8_tflite_peak_ram_equals_the_estimate_for_a_tile(tmp_path: Path) -> None:
    """The exported int8 graph of a residual, fused SR network holds what edgenas's liveness
    model says it holds for one tile (the frame's peak RAM: tiles run one at a time)."""
    from edgenas import cost
    from edgenas.export.tflite_export import tflite_int8_random, verify_tflite
    from edgenas.spaces import get_space
    from edgenas.spaces.sr_dlsr import SRDLSRSpaceConfig

    space = get_space("sr-dlsr", config=SRDLSRSpaceConfig(tiles="32", colours="y", max_blocks=3, widths="16"))
    sel = {p.name: p.options[0] for p in space.choice_points()}
    sel.update({"b1.op0": "conv3x3", "b1.op1": "sep3x3", "b2.op0": "dil3x3", "b2.op1": "conv1x1",
                "b3.op0": "conv5x5", "b3.op1": "skip", "b3.in1": "yes", "blocks": "3"})
    spec = space.spec({k: v for k, v in sel.items() if k in {p.name for p in space.choice_points()}})
    net = space.build(spec).eval()
    path = tflite_int8_random(net, (1, *spec.data.input_shape), tmp_path / "sr.int8.tflite")
    ver = verify_tflite(path)
    assert ver["fully_int8"] and ver["transpose_ops"] == 0 and "DEPTH_TO_SPACE" in ver["op_counts"]
    assert ver["peak_activation_bytes"] == cost.peak_ram(space).cost(spec)
    # the ONNX QDQ model too: its final pixel shuffle requantized, the output an int8 tensor dequantized
    from edgenas.export.graph_memory import onnx_memory_report
    from edgenas.export.onnx_export import export_onnx_fp32, quantize_int8

    fp32 = export_onnx_fp32(net, (1, *spec.data.input_shape), tmp_path / "sr.onnx", dynamic_batch=False)
    calib = get_task("sr").example_input(spec.data, n=16, seed=0)
    int8 = quantize_int8(fp32, tmp_path / "sr.int8.onnx", calib)
    assert onnx_memory_report(int8)["peak_activation_bytes"] == cost.peak_ram(space).cost(spec)
    import onnxruntime as ort

    def run(path: Path) -> np.ndarray:
        sess = ort.InferenceSession(str(path))
        return sess.run(None, {sess.get_inputs()[0].name: calib[:1]})[0]

    assert np.abs(run(int8) - run(fp32)).max() < 0.05
    # per frame: latency and Mult-Adds count every tile, RAM one
    assert cost.macs(space).cost(spec) == sum(d.macs for d in space.layers(spec)) * spec.data.tiles_per_frame


def test_bicubic_is_the_floor_a_trained_tile_model_scores_above(ds) -> None:
    """to_uint8_hwc round trip keeps the bicubic baseline's Set5 ×2 PSNR (33.69 dB, a = −0.5)."""
    from edgenas.datasets.sisr import bicubic_up

    vals = []
    for im in ds.images("test"):
        lr, hr = lr_hr_pair(im, 2, "y")
        vals.append(psnr(to_chw_float(to_uint8_hwc(bicubic_up(lr, 2))), hr, 2))
    assert float(np.mean(vals)) == pytest.approx(33.69, abs=0.05)
