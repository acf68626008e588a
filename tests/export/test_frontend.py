"""The exported MFCC front ends (ONNX STFT, TFLite RFFT2D) reproduce the training features.

Parity threshold: ``ATOL = 1e-3`` on features that span ≈ 120 (the log-mel floor is
log(1e-6) ≈ −13.8 per band). Over all 2,000 FSDD clips (8 kHz, three window/hop choices) and
the 249 Speech Commands clips (16 kHz) both exports were measured within 4.5e-4 of ``mfcc()``,
itself up to 2.7e-4 away from the float64 NumPy reference (float32 FFT and log rounding,
largest at 16 kHz with n_fft 1024). 1e-3 leaves 2× headroom over that float32 noise and is
still ~500× below one int8 input step of a classifier (≈ range / 255 ≈ 0.5).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import edgenas
from edgenas.datasets.audio import fit_length, load_audio
from edgenas.datasets.features import mfcc
from edgenas.errors import ExportError
from edgenas.export.frontend import (
    export_frontend_onnx,
    export_frontend_tflite,
    read_frontend_metadata,
    run_frontend,
    tflite_op_names,
)
from edgenas.spec import DataConfig

DATA = Path("/work/shared/data")
FSDD = DATA / "fsdd" / "recordings"
SPEECH = DATA / "speech_commands_v0.01_subset"
ATOL = 1e-3

pytestmark = pytest.mark.skipif(not FSDD.is_dir() or not SPEECH.is_dir(), reason="shared sample data not present")

CASES = {
    "fsdd-8k": (DataConfig(sample_rate=8000), lambda: sorted(FSDD.glob("*.wav"))[::50]),
    "speech-16k": (DataConfig(n_mfcc=13, win_ms=30, hop_ms=10), lambda: sorted(SPEECH.glob("*/*.wav"))[::12]),
}


def _waves(files: list[Path], cfg: DataConfig) -> np.ndarray:
    return np.stack([fit_length(load_audio(f, cfg.sample_rate), cfg.clip_samples) for f in files]).astype(np.float32)


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cfg, files = CASES[request.param]
    d = tmp_path_factory.mktemp(f"frontend-{request.param}")
    waves = _waves(files(), cfg)
    with torch.no_grad():
        ref = mfcc(torch.from_numpy(waves), cfg).numpy()[:, None]
    return {
        "cfg": cfg, "dir": d, "waves": waves, "ref": ref,
        "onnx": export_frontend_onnx(cfg, d / "frontend.onnx"),
        "tflite": export_frontend_tflite(cfg, d / "frontend.tflite"),
    }


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_parity_with_training_features(exported: dict, fmt: str) -> None:
    cfg, ref = exported["cfg"], exported["ref"]
    got = run_frontend(exported[fmt], exported["waves"])
    assert got.shape == (len(ref), 1, *cfg.feature_shape) and got.dtype == np.float32
    diff = np.abs(got - ref)
    span = float(ref.max() - ref.min())
    print(f"{fmt} {cfg.key()}: max |diff| {diff.max():.2e} (relative to range {diff.max() / span:.1e}), "
          f"mean {diff.mean():.1e}")
    assert span > 50  # real speech, not silence
    assert diff.max() < ATOL
    assert diff.mean() < 1e-5


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_metadata(exported: dict, fmt: str) -> None:
    md = read_frontend_metadata(exported[fmt])
    assert md["edgenas_version"] == edgenas.__version__
    assert json.loads(md["data_config"]) == exported["cfg"].to_dict()
    assert md["artifact"] == "frontend" and md["quant_scheme"] == "fp32"
    assert md["output_layout"] == {"onnx": "NCHW", "tflite": "NHWC"}[fmt]


def test_onnx_graph(exported: dict) -> None:
    cfg = exported["cfg"]
    model = onnx.load(str(exported["onnx"]))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert "STFT" in ops and model.opset_import[0].version >= 18
    dims = lambda vi: [d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in model.graph.input] == ["audio"] and dims(model.graph.input[0]) == [1, cfg.clip_samples]
    assert [o.name for o in model.graph.output] == ["features"]
    assert dims(model.graph.output[0]) == [1, 1, cfg.n_frames, cfg.n_mfcc]


def test_tflite_graph(exported: dict) -> None:
    from ai_edge_litert.interpreter import Interpreter

    ops = tflite_op_names(exported["tflite"])
    assert "RFFT2D" in ops and "LOG" in ops
    assert not [op for op in ops if op in ("CUSTOM", "FlexRFFT", "DELEGATE")] and not any("Flex" in op for op in ops)
    interp = Interpreter(model_path=str(exported["tflite"]))
    cfg = exported["cfg"]
    assert list(interp.get_input_details()[0]["shape"]) == [1, cfg.clip_samples]
    assert list(interp.get_output_details()[0]["shape"]) == [1, cfg.n_frames, cfg.n_mfcc, 1]


def test_atomic_write_leaves_only_the_models(exported: dict) -> None:
    d: Path = exported["dir"]
    assert sorted(p.name for p in d.iterdir()) == ["frontend.onnx", "frontend.tflite"]


def test_missing_tensorflow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'edgenas\[tflite\]'"):
        export_frontend_tflite(DataConfig(sample_rate=8000), tmp_path / "f.tflite")
    assert not list(tmp_path.iterdir())


def test_run_frontend_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not found"):
        run_frontend(tmp_path / "nope.onnx", np.zeros((1, 8000), np.float32))


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_standardisation_is_folded_into_the_front_end(exported: dict, fmt: str, tmp_path: Path) -> None:
    cfg, ref = exported["cfg"], exported["ref"]
    mean = ref.mean(axis=(0, 1, 2)).astype(np.float32)
    std = (ref.std(axis=(0, 1, 2)) + 1e-6).astype(np.float32)
    fn = export_frontend_onnx if fmt == "onnx" else export_frontend_tflite
    path = fn(cfg, tmp_path / f"norm.{fmt}", (mean, std))
    got = run_frontend(path, exported["waves"])
    want = (ref - mean) / std
    assert np.abs(want).max() < 20 and np.abs(got - want).max() < ATOL  # standardised, and the same numbers
    md = read_frontend_metadata(path)
    assert json.loads(md["normalization"])["std"] == pytest.approx(std.tolist(), rel=1e-6)
