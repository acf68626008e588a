"""Every exported MFCC front end (each implementation, ONNX and TFLite) reproduces the training features.

Parity threshold: ``ATOL = 1e-3`` absolute on features that span ≈ 110–120 (the log-mel floor is
log(1e-6) ≈ −13.8 per band), i.e. ``REL = 1e-5`` of the feature range, also asserted. Over all
2,000 FSDD clips (8 kHz, three window/hop choices) and the 249 Speech Commands clips (16 kHz) the
``stft`` exports were measured within 4.5e-4 of ``mfcc()``, itself up to 2.7e-4 away from the
float64 NumPy reference (float32 FFT and log rounding, largest at 16 kHz with n_fft 1024). On the
clips used here every implementation (``stft``, ``dft``, ``dft-conv``, ``fft2``, ``fft2-bmm``,
``fft2-lowmem``, both formats) is within 1.8e-4 of ``mfcc()`` (1.5e-6 of the range; ``stft`` itself 1.6e-4, all largest
at 16 kHz 30/10 ms), as the tests print. 1e-3 leaves 2× headroom over that float32
noise and is still ~500× below one int8 input step of a classifier (≈ range / 255 ≈ 0.5).

Exports are shared per data configuration through a module-scoped cache; the real ONNX Runtime
and the real LiteRT interpreter run them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch

import edgenas
from edgenas.datasets.audio import fit_length, load_audio
from edgenas.datasets.features import mfcc
from edgenas.errors import ExportError
from edgenas.export.frontend import (
    DEFAULT_IMPL,
    FALLBACK_IMPL,
    IMPLS,
    LOWMEM_CHUNKS,
    _fft2_plan,
    _fft2_radix,
    _mfcc_constants,
    export_frontend_onnx,
    export_frontend_tflite,
    read_frontend_metadata,
    resolve_impl,
    run_frontend,
    tflite_op_names,
)
from edgenas.export.graph_memory import onnx_memory_report
from edgenas.export.tflite_export import verify_tflite
from edgenas.spec import DataConfig

DATA = Path("/work/shared/data")
FSDD = DATA / "fsdd" / "recordings"
SPEECH = DATA / "speech_commands_v0.01_subset"
ATOL = 1e-3
REL = 1e-5
EXPORT = {"onnx": export_frontend_onnx, "tflite": export_frontend_tflite}
FORMAT_IMPLS = [(fmt, impl) for fmt in IMPLS for impl in IMPLS[fmt]]

pytestmark = pytest.mark.skipif(not FSDD.is_dir() or not SPEECH.is_dir(), reason="shared sample data not present")

CASES = {
    "fsdd-8k": (DataConfig(sample_rate=8000), lambda: sorted(FSDD.glob("*.wav"))[::50]),           # standard, 8 kHz
    "speech-16k": (DataConfig(), lambda: sorted(SPEECH.glob("*/*.wav"))[::12]),                     # standard, 16 kHz
    "speech-16k-30-10": (DataConfig(n_mfcc=13, win_ms=30, hop_ms=10), lambda: sorted(SPEECH.glob("*/*.wav"))[::12]),
}


def _waves(files: list[Path], cfg: DataConfig) -> np.ndarray:
    return np.stack([fit_length(load_audio(f, cfg.sample_rate), cfg.clip_samples) for f in files]).astype(np.float32)


class Exports:
    """One data configuration: its clips, their training features, and front ends exported on demand."""

    def __init__(self, cfg: DataConfig, waves: np.ndarray, folder: Path) -> None:
        self.cfg, self.waves, self.dir = cfg, waves, folder
        with torch.no_grad():
            self.ref = mfcc(torch.from_numpy(waves), cfg).numpy()[:, None]
        self.mean = self.ref.mean(axis=(0, 1, 2)).astype(np.float32)
        self.std = (self.ref.std(axis=(0, 1, 2)) + 1e-6).astype(np.float32)
        self._files: dict[tuple[str, str | None, bool], Path] = {}

    def get(self, fmt: str, impl: str | None, norm: bool = False) -> Path:
        key = (fmt, impl, norm)
        if key not in self._files:
            name = f"frontend.{impl or 'default'}{'.norm' if norm else ''}.{fmt}"
            self._files[key] = EXPORT[fmt](self.cfg, self.dir / name, (self.mean, self.std) if norm else None, impl=impl)
        return self._files[key]


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exports:
    cfg, files = CASES[request.param]
    return Exports(cfg, _waves(files(), cfg), tmp_path_factory.mktemp(f"frontend-{request.param}"))


@pytest.mark.parametrize("fmt,impl", FORMAT_IMPLS)
def test_parity_with_training_features(case: Exports, fmt: str, impl: str) -> None:
    cfg, ref = case.cfg, case.ref
    got = run_frontend(case.get(fmt, impl), case.waves)
    assert got.shape == (len(ref), 1, *cfg.feature_shape) and got.dtype == np.float32
    diff = np.abs(got - ref)
    span = float(ref.max() - ref.min())
    print(f"{fmt}/{impl} {cfg.key()}: max |diff| {diff.max():.2e} of range {span:.0f} "
          f"(relative {diff.max() / span:.1e}), mean {diff.mean():.1e}")
    assert span > 50  # real speech, not silence
    assert diff.max() < ATOL and diff.max() / span < REL
    assert diff.mean() < 1e-5


@pytest.mark.parametrize("fmt,impl", FORMAT_IMPLS)
def test_standardisation_is_folded_into_the_front_end(case: Exports, fmt: str, impl: str) -> None:
    path = case.get(fmt, impl, norm=True)
    got = run_frontend(path, case.waves)
    want = (case.ref - case.mean) / case.std
    assert np.abs(want).max() < 20 and np.abs(got - want).max() < ATOL  # standardised, and the same numbers
    md = read_frontend_metadata(path)
    assert json.loads(md["normalization"])["std"] == pytest.approx(case.std.tolist(), rel=1e-6)
    assert md["frontend_impl"] == impl


@pytest.mark.parametrize("fmt,impl", FORMAT_IMPLS)
def test_metadata_names_the_implementation(case: Exports, fmt: str, impl: str) -> None:
    md = read_frontend_metadata(case.get(fmt, impl))
    assert md["frontend_impl"] == impl and md["frontend"] == "mfcc"
    assert md["edgenas_version"] == edgenas.__version__
    assert json.loads(md["data_config"]) == case.cfg.to_dict()
    assert md["artifact"] == "frontend" and md["quant_scheme"] == "fp32"
    assert md["output_layout"] == {"onnx": "NCHW", "tflite": "NHWC"}[fmt]
    assert json.loads(md["normalization"]) is None


@pytest.mark.parametrize("fmt", sorted(IMPLS))
def test_default_implementation_is_DEFAULT_IMPL(case: Exports, fmt: str) -> None:
    assert DEFAULT_IMPL[fmt] in IMPLS[fmt]
    assert resolve_impl(case.cfg, fmt) == DEFAULT_IMPL[fmt]
    path = case.get(fmt, None)
    assert read_frontend_metadata(path)["frontend_impl"] == DEFAULT_IMPL[fmt]
    got = run_frontend(path, case.waves)
    assert np.abs(got - case.ref).max() < ATOL


@pytest.mark.parametrize("fmt", sorted(IMPLS))
def test_default_peak_memory_is_level_with_stft(case: Exports, fmt: str) -> None:
    """The default's peak activation bytes (what the RAM budget counts) stay within 10% of today's."""
    def peak(p: Path) -> int:
        return int((onnx_memory_report(p) if fmt == "onnx" else verify_tflite(p))["peak_activation_bytes"])

    default, stft = peak(case.get(fmt, None)), peak(case.get(fmt, "stft"))
    print(f"{fmt} {case.cfg.key()}: peak activation bytes default {default}, stft {stft}")
    assert 0 < default <= 1.1 * stft


@pytest.mark.parametrize("fmt", sorted(IMPLS))
def test_lowmem_halves_the_peak(case: Exports, fmt: str) -> None:
    def peak(p: Path) -> int:
        return int((onnx_memory_report(p) if fmt == "onnx" else verify_tflite(p))["peak_activation_bytes"])

    low, fft2, stft = (peak(case.get(fmt, i)) for i in ("fft2-lowmem", "fft2", "stft"))
    print(f"{fmt} {case.cfg.key()}: peak activation bytes fft2-lowmem {low}, fft2 {fft2}, stft {stft}")
    assert low <= 0.5 * min(fft2, stft)


@pytest.mark.parametrize("impl", IMPLS["onnx"])
def test_onnx_graph(case: Exports, impl: str) -> None:
    cfg = case.cfg
    model = onnx.load(str(case.get("onnx", impl)))
    onnx.checker.check_model(model, full_check=True)
    ops = [n.op_type for n in model.graph.node]
    assert ("STFT" in ops) == (impl == "stft") and model.opset_import[0].version >= 18
    if impl.startswith("fft2"):
        conv = next(n for n in model.graph.node if n.op_type == "Conv")
        assert {a.name: a.i for a in conv.attribute}["group"] == _fft2_radix(cfg)
        assert ops.count("Transpose") == 1 and ops.count("Conv") == (LOWMEM_CHUNKS if impl == "fft2-lowmem" else 1)
        if impl == "fft2-lowmem":  # the chunks share their matrices: about the flash of "fft2"
            assert case.get("onnx", impl).stat().st_size < 1.05 * case.get("onnx", "fft2").stat().st_size
    if impl == "dft":
        assert "Gather" not in ops and "Conv" not in ops
    dims = lambda vi: [d.dim_value for d in vi.type.tensor_type.shape.dim]  # noqa: E731
    assert [i.name for i in model.graph.input] == ["audio"] and dims(model.graph.input[0]) == [1, cfg.clip_samples]
    assert [o.name for o in model.graph.output] == ["features"]
    assert dims(model.graph.output[0]) == [1, 1, cfg.n_frames, cfg.n_mfcc]


@pytest.mark.parametrize("impl", IMPLS["tflite"])
def test_tflite_graph(case: Exports, impl: str) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = case.get("tflite", impl)
    ops = tflite_op_names(path)
    assert ("RFFT2D" in ops) == (impl == "stft") and "LOG" in ops
    assert not [op for op in ops if op in ("CUSTOM", "FlexRFFT", "DELEGATE")] and not any("Flex" in op for op in ops)
    expected = {"dft": "FULLY_CONNECTED", "dft-conv": "CONV_2D", "fft2": "DEPTHWISE_CONV_2D", "fft2-bmm": "BATCH_MATMUL",
                "fft2-lowmem": "DEPTHWISE_CONV_2D"}
    if impl in expected:
        assert expected[impl] in ops and "GATHER" not in ops
    if impl == "fft2":
        assert ops.count("TRANSPOSE") == 1 and verify_tflite(path)["tflm_compatible"]
    if impl == "fft2-lowmem":  # depth first: each chunk's LOG before the next chunk's convolution
        dw = [i for i, op in enumerate(ops) if op == "DEPTHWISE_CONV_2D"]
        logs = [i for i, op in enumerate(ops) if op == "LOG"]
        assert len(dw) == len(logs) == LOWMEM_CHUNKS and all(d < lg < n for d, lg, n in zip(dw, logs, dw[1:] + [len(ops)]))
        assert verify_tflite(path)["tflm_compatible"]
    interp = Interpreter(model_path=str(path))
    cfg = case.cfg
    assert list(interp.get_input_details()[0]["shape"]) == [1, cfg.clip_samples]
    assert list(interp.get_output_details()[0]["shape"]) == [1, cfg.n_frames, cfg.n_mfcc, 1]


def test_atomic_write_leaves_only_the_models(case: Exports) -> None:
    for fmt in IMPLS:
        case.get(fmt, DEFAULT_IMPL[fmt])
    assert all(not p.name.startswith(".") and p.suffix in (".onnx", ".tflite") for p in case.dir.iterdir())


@pytest.mark.parametrize("cfg", [DataConfig(sample_rate=8000), DataConfig(), DataConfig(n_mfcc=13, win_ms=30, hop_ms=10),
                                 DataConfig(sample_rate=8000, win_ms=25, hop_ms=10), DataConfig(sample_rate=11025)],
                         ids=lambda c: c.key())
def test_fft2_factorisation_gives_the_power_spectrum(cfg: DataConfig) -> None:
    """The two matrix stages of "fft2" (float64 here) give |rfft(frame·window, n_fft)|² at every used bin."""
    c = _mfcc_constants(cfg, None)
    p = _fft2_plan(cfg, c)
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(p.rows * p.b)
    poly = wave.reshape(p.rows, p.b).T                                     # [B, rows]: phase b
    hb = cfg.hop_length // p.b
    w1 = p.w1.astype(np.float64).reshape(p.b, 2 * p.qp, p.taps)
    for t in (0, cfg.n_frames - 1):
        y = np.einsum("bca,ba->bc", w1, poly[:, t * hb: t * hb + p.taps])   # stage 1: [B, (re/im, j)]
        z = p.d.astype(np.float64) @ y.reshape(2 * p.b, p.qp)              # stage 2: [(re/im, m), j]
        power = (z[:p.b] ** 2 + z[p.b:] ** 2)                              # [m, j]
        frame = wave[t * cfg.hop_length: t * cfg.hop_length + cfg.win_length] * c.window
        want = np.abs(np.fft.rfft(frame, n=cfg.n_fft)) ** 2 @ c.mel
        got = np.einsum("mj,mjk->k", power, p.mel.astype(np.float64))
        assert np.allclose(got, want, rtol=1e-5, atol=1e-9)


def test_fft2_radix_is_the_cheapest_divisor() -> None:
    assert _fft2_radix(DataConfig(sample_rate=8000)) == 16 and _fft2_radix(DataConfig()) == 16
    assert _fft2_radix(DataConfig(sample_rate=11025, hop_ms=10)) is None  # hop 110: no power of two ≥ 4 divides it


def test_default_falls_back_where_fft2_does_not_apply(tmp_path: Path) -> None:
    cfg = DataConfig(sample_rate=11025, hop_ms=10)
    assert resolve_impl(cfg, "onnx") == FALLBACK_IMPL != DEFAULT_IMPL["onnx"]
    path = export_frontend_onnx(cfg, tmp_path / "f.onnx")
    assert read_frontend_metadata(path)["frontend_impl"] == FALLBACK_IMPL
    wave = (np.random.default_rng(0).standard_normal((2, cfg.clip_samples)) * 0.1).astype(np.float32)
    with torch.no_grad():
        ref = mfcc(torch.from_numpy(wave), cfg).numpy()[:, None]
    assert np.abs(run_frontend(path, wave) - ref).max() < ATOL
    with pytest.raises(ExportError, match=r"'fft2' needs a hop length divisible by") as e:
        export_frontend_onnx(cfg, tmp_path / "g.onnx", impl="fft2")
    assert "\n" not in str(e.value) and not (tmp_path / "g.onnx").exists()


@pytest.mark.parametrize("fmt", sorted(IMPLS))
def test_unknown_impl_is_one_clear_line(tmp_path: Path, fmt: str) -> None:
    with pytest.raises(ExportError) as e:
        EXPORT[fmt](DataConfig(sample_rate=8000), tmp_path / f"f.{fmt}", impl="fft3")
    msg = str(e.value)
    assert "\n" not in msg and "'fft3'" in msg and all(i in msg for i in IMPLS[fmt]) and "did you mean 'fft2'" in msg
    assert not list(tmp_path.iterdir())
    with pytest.raises(ExportError, match="unknown onnx front-end implementation 'fft2-bmm'"):
        export_frontend_onnx(DataConfig(sample_rate=8000), tmp_path / "f.onnx", impl="fft2-bmm")  # TFLite only


def test_missing_tensorflow_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` raises ImportError
    with pytest.raises(ExportError, match=r"pip install 'edgenas\[tflite\]'"):
        export_frontend_tflite(DataConfig(sample_rate=8000), tmp_path / "f.tflite")
    assert not list(tmp_path.iterdir())


def test_run_frontend_errors(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="not found"):
        run_frontend(tmp_path / "nope.onnx", np.zeros((1, 8000), np.float32))


def test_norm_of_the_wrong_length_is_an_export_error(tmp_path: Path) -> None:
    cfg = DataConfig(sample_rate=8000)
    bad: Callable[[], Path] = lambda: export_frontend_onnx(  # noqa: E731
        cfg, tmp_path / "f.onnx", (np.zeros(3, np.float32), np.ones(3, np.float32)), impl="fft2")
    with pytest.raises(ExportError, match="normalisation needs 10 means and stds"):
        bad()
