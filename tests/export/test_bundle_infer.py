"""The board-side ``infer.py`` (export/bundle_infer.py) on a tiny real bundle.

The bundle: the 8 kHz MFCC front end (ONNX and TFLite) and a linear 4-digit classifier fitted
in closed form (ridge regression) on real FSDD clips, as an int8 ONNX QDQ model
(export_onnx_fp32 + quantize_int8) and as a full-int8 TFLite model (converted here from a
tf.function; the real TFLite classifier route lives in export/tflite_export.py). infer.py runs
as a subprocess of the venv's Python with ``torch`` and ``edgenas`` made unimportable, and must
print what the in-process pipeline (``mfcc()`` + the same classifier) predicts.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import wave
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf
import torch

from edgenas.datasets.audio import _decode, fit_length, load_audio, resample
from edgenas.datasets.features import mfcc
from export_toys import tflite_int8_linear
from edgenas.export.frontend import export_frontend_onnx, export_frontend_tflite
from edgenas.export.onnx_export import export_onnx_fp32, model_metadata, quantize_int8, run_onnx
from edgenas.spec import DataConfig

DATA = Path("/work/shared/data")
FSDD = DATA / "fsdd" / "recordings"
SPEECH = DATA / "speech_commands_v0.01_subset"
SCRIPT = Path(__file__).resolve().parents[2] / "export" / "bundle_infer.py"
CFG = DataConfig(sample_rate=8000)
LABELS = ["zero", "one", "two", "three"]
SPEAKERS = ("george", "jackson", "lucas", "nicolas")
# clips the classifier was fitted on: clear margins, so the label comparison is robust
TEST_CLIPS = [FSDD / f"{d}_{s}_{i}.wav" for d, s, i in ((0, "jackson", 5), (2, "lucas", 10), (3, "george", 15))]

pytestmark = pytest.mark.skipif(not FSDD.is_dir() or not SPEECH.is_dir(), reason="shared sample data not present")


def _features(files: list[Path], rate: int = CFG.sample_rate) -> np.ndarray:
    waves = np.stack([fit_length(load_audio(f, rate), CFG.clip_samples) for f in files]).astype(np.float32)
    with torch.no_grad():
        return mfcc(torch.from_numpy(waves), CFG).numpy()[:, None]  # [N, 1, 49, 10]


def _tflite_logits(path: Path, feats: np.ndarray) -> np.ndarray:
    """In-process reference for the int8 TFLite classifier (quantize, invoke, dequantize)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    (si, zi), (so, zo) = inp["quantization"], out["quantization"]
    res = []
    for x in feats:
        q = np.clip(np.round(x.reshape(inp["shape"]) / si) + zi, -128, 127).astype(np.int8)
        interp.set_tensor(inp["index"], q)
        interp.invoke()
        res.append((interp.get_tensor(out["index"]).astype(np.float32).reshape(-1) - zo) * so)
    return np.stack(res)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> dict:
    d = tmp_path_factory.mktemp("bundle")
    train = [FSDD / f"{dg}_{s}_{i}.wav" for dg in range(4) for s in SPEAKERS for i in range(5, 50, 5)]
    x = _features(train)
    y = np.array([int(f.name[0]) for f in train])
    # ridge regression onto one-hot targets: a deterministic classifier with clear margins
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(0)
    xc = flat - mean
    w = np.linalg.solve(xc.T @ xc + 1e3 * np.eye(xc.shape[1]), xc.T @ (np.eye(4)[y] - 0.25))
    b = 0.25 - mean @ w
    w, b = w.astype(np.float32), b.astype(np.float32)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(w.shape[0], 4))
    with torch.no_grad():
        net[1].weight.copy_(torch.from_numpy(w.T))
        net[1].bias.copy_(torch.from_numpy(b))
    md = model_metadata(None, data_config=json.dumps(CFG.to_dict(), sort_keys=True))
    fp32 = export_onnx_fp32(net, (1, 1, *CFG.feature_shape), d / "model.fp32.onnx", md, dynamic_batch=False)
    quantize_int8(fp32, d / "model.int8.onnx", x, md)
    fp32.unlink()
    (d / "model.int8.tflite").write_bytes(tflite_int8_linear(w, b, x, CFG.feature_shape))
    export_frontend_onnx(CFG, d / "frontend.onnx")
    export_frontend_tflite(CFG, d / "frontend.tflite")
    shutil.copy(SCRIPT, d / "infer.py")
    base = {"schema_version": 1, "labels": LABELS, "data_config": CFG.to_dict(), "output": "logits"}
    files = {"frontend": {"onnx": "frontend.onnx", "tflite": "frontend.tflite"},
             "model": {"onnx": "model.int8.onnx", "tflite": "model.int8.tflite"}}

    def write(name: str, frontend: list[str], model: list[str]) -> Path:
        b_ = {**base, "frontend": {k: files["frontend"][k] for k in frontend},
              "model": {k: files["model"][k] for k in model}}
        (d / name).write_text(json.dumps(b_, indent=2))
        return d / name

    write("bundle.json", ["onnx", "tflite"], ["onnx", "tflite"])
    write("bundle-onnx.json", ["onnx"], ["onnx"])
    write("bundle-mixed.json", ["tflite"], ["onnx"])
    # modules infer.py must not need (torch, edgenas) and, for one test, every runtime: shadowed
    shadow = tmp_path_factory.mktemp("shadow")
    for sub, names in (("no-edgenas", ["torch", "edgenas"]),
                       ("no-runtime", ["torch", "edgenas", "ai_edge_litert", "tflite_runtime", "tensorflow",
                                       "onnxruntime"])):
        for n in names:
            (shadow / sub / n).mkdir(parents=True)
            (shadow / sub / n / "__init__.py").write_text(f"raise ImportError('{n} hidden by the test')\n")
    feats = _features(TEST_CLIPS)
    return {"dir": d, "shadow": shadow, "feats": feats,
            "onnx_logits": run_onnx(d / "model.int8.onnx", feats),
            "tflite_logits": _tflite_logits(d / "model.int8.tflite", feats)}


def _infer(bundle: dict, *args: str, shadow: str = "no-edgenas", script: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(bundle["shadow"] / shadow), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(script or bundle["dir"] / "infer.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("edgenas_bundle_infer", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def test_classifier_has_clear_margins(bundle: dict) -> None:
    for logits in (bundle["onnx_logits"], bundle["tflite_logits"]):
        assert [LABELS[i] for i in logits.argmax(1)] == ["zero", "two", "three"]
        top2 = np.sort(logits, axis=1)[:, -2:]
        assert np.all(top2[:, 1] - top2[:, 0] > 0.1)


@pytest.mark.parametrize("k", range(len(TEST_CLIPS)))
def test_onnx_text_output_matches_in_process(bundle: dict, k: int) -> None:
    res = _infer(bundle, str(TEST_CLIPS[k]), "--runtime", "onnx")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1
    label, score = lines[0].split()
    ref = bundle["onnx_logits"][k]
    assert label == LABELS[int(ref.argmax())]
    assert float(score) == pytest.approx(float(_softmax(ref).max()), abs=2e-3)


def test_onnx_json_logits(bundle: dict) -> None:
    res = _infer(bundle, str(TEST_CLIPS[1]), "--runtime", "onnx", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    np.testing.assert_allclose(out["logits"], bundle["onnx_logits"][1], atol=2e-3)
    assert out["label"] == "two" and set(out["scores"]) == set(LABELS)
    assert out["runtime"]["frontend"].startswith("onnxruntime") and out["runtime"]["model"].startswith("onnxruntime")
    assert out["wav"] == {"path": str(TEST_CLIPS[1]), "sample_rate": 8000, "resampled_to": 8000}


def test_tflite_route_int8_classifier(bundle: dict) -> None:
    """Default runtime order picks LiteRT for both stages; int8 input/output (de)quantized."""
    for k, clip in enumerate(TEST_CLIPS):
        res = _infer(bundle, str(clip), "--json")
        assert res.returncode == 0, res.stderr
        out = json.loads(res.stdout)
        assert out["runtime"]["frontend"].startswith("ai_edge_litert") and "frontend.tflite" in out["runtime"]["frontend"]
        assert out["runtime"]["model"].startswith("ai_edge_litert") and "model.int8.tflite" in out["runtime"]["model"]
        ref = bundle["tflite_logits"][k]
        assert out["label"] == LABELS[int(ref.argmax())]
        scale = float(np.abs(ref).max())
        np.testing.assert_allclose(out["logits"], ref, atol=0.02 * scale)


def test_mixed_bundle_tflite_frontend_onnx_classifier(bundle: dict) -> None:
    res = _infer(bundle, str(TEST_CLIPS[2]), "--json", "--bundle", str(bundle["dir"] / "bundle-mixed.json"))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert "frontend.tflite" in out["runtime"]["frontend"] and "model.int8.onnx" in out["runtime"]["model"]
    assert out["label"] == LABELS[int(bundle["onnx_logits"][2].argmax())]
    np.testing.assert_allclose(out["logits"], bundle["onnx_logits"][2], atol=2e-3)


def test_resamples_like_training(bundle: dict) -> None:
    """A 16 kHz Speech Commands clip through the 8 kHz bundle = training's loader + mfcc()."""
    clip = sorted(SPEECH.glob("*/*.wav"))[0]
    ref = run_onnx(bundle["dir"] / "model.int8.onnx", _features([clip]))[0]
    res = _infer(bundle, str(clip), "--json", "--runtime", "onnx")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["wav"]["sample_rate"] == 16000 and out["wav"]["resampled_to"] == 8000
    np.testing.assert_allclose(out["logits"], ref, atol=5e-3)


@pytest.mark.parametrize("json_out", [False, True])
def test_bench(bundle: dict, json_out: bool) -> None:
    res = _infer(bundle, str(TEST_CLIPS[0]), "--runtime", "onnx", "--bench", "5", "--warmup", "2",
                 *(["--json"] if json_out else []))
    assert res.returncode == 0, res.stderr
    if json_out:
        b = json.loads(res.stdout)["bench"]
        assert b["runs"] == 5 and b["warmup"] == 2 and 0 < b["median_ms"] <= b["p90_ms"]
        assert 0 < b["frontend_median_ms"] <= b["median_ms"] and 0 < b["model_median_ms"] <= b["median_ms"]
    else:
        lines = res.stdout.strip().splitlines()
        assert len(lines) == 2 and lines[0].split()[0] == "zero"
        words = lines[1].split()
        assert words[:2] == ["latency_ms", "median"] and words[3] == "p90"
        assert 0 < float(words[2]) <= float(words[4])


def _one_line_error(res: subprocess.CompletedProcess, *fragments: str) -> None:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_errors_are_one_line_exit_2(bundle: dict, tmp_path: Path) -> None:
    _one_line_error(_infer(bundle, str(tmp_path / "missing.wav")), "not found", "missing.wav")
    bad = tmp_path / "bad.wav"
    bad.write_text("not a wav file\n")
    _one_line_error(_infer(bundle, str(bad)), "cannot read WAV", "bad.wav")
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
    _one_line_error(_infer(bundle, str(empty)), "no samples")
    _one_line_error(_infer(bundle, str(TEST_CLIPS[0]), "--runtime", "tflite", "--bundle",
                           str(bundle["dir"] / "bundle-onnx.json")), "no tflite", "front-end")
    _one_line_error(_infer(bundle, str(TEST_CLIPS[0]), shadow="no-runtime"), "no runtime", "onnxruntime")
    _one_line_error(_infer(bundle, str(TEST_CLIPS[0]), "--runtime", "bogus"), "--runtime")
    # a lone infer.py (no bundle.json next to it) and a bundle whose model file is missing
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(SCRIPT, lone / "infer.py")
    _one_line_error(_infer(bundle, str(TEST_CLIPS[0]), script=lone / "infer.py"), "bundle.json not found")
    (lone / "bundle.json").write_text(json.dumps({"labels": LABELS, "data_config": CFG.to_dict(),
                                                  "frontend": {"onnx": "frontend.onnx"},
                                                  "model": {"onnx": "model.int8.onnx"}}))
    _one_line_error(_infer(bundle, str(TEST_CLIPS[0]), script=lone / "infer.py"), "model file not found")
    (lone / "frontend.tflite").write_bytes(b"\0" * 64)  # corrupt: the runtime's complaint, on one line
    (lone / "bundle.json").write_text(json.dumps({"labels": LABELS, "data_config": CFG.to_dict(),
                                                  "frontend": {"tflite": "frontend.tflite"},
                                                  "model": {"onnx": "model.int8.onnx"}}))
    _one_line_error(_infer(bundle, str(TEST_CLIPS[0]), script=lone / "infer.py"), "cannot load", "frontend.tflite")


def test_script_imports_only_stdlib_numpy_and_runtimes() -> None:
    tree = ast.parse(SCRIPT.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"torch", "edgenas", "torchaudio", "soundfile", "scipy"}
    assert names <= set(sys.stdlib_module_names) | {"numpy", "PIL"}  # Pillow: image bundles only, imported there


@pytest.mark.parametrize("subtype,channels", [("PCM_U8", 1), ("PCM_16", 2), ("PCM_24", 1), ("PCM_32", 3)])
def test_read_wav_matches_training_decoder(tmp_path: Path, subtype: str, channels: int) -> None:
    infer = _load_script()
    rng = np.random.default_rng(0)
    x = np.clip(rng.standard_normal((1234, channels)) * 0.3, -1, 0.99).astype(np.float32)
    path = tmp_path / f"{subtype}.wav"
    sf.write(path, x, 11025, subtype=subtype)
    got, rate = infer.read_wav(str(path), np)
    ref, ref_rate = _decode(path)
    assert rate == ref_rate == 11025 and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-6)


@pytest.mark.parametrize("orig,new", [(16000, 8000), (8000, 16000), (44100, 16000), (22050, 8000)])
def test_resampler_matches_torchaudio(orig: int, new: int) -> None:
    infer = _load_script()
    x = np.random.default_rng(1).standard_normal(orig // 3).astype(np.float32) * 0.2
    got = infer.resample(x, orig, new, np)
    ref = resample(x, orig, new)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_fit_length_matches_training() -> None:
    from edgenas.datasets.audio import fit_length as train_fit

    infer = _load_script()
    x = np.arange(11, dtype=np.float32)
    for n in (4, 5, 11, 16, 17):
        np.testing.assert_array_equal(infer.fit_length(x, n, np), train_fit(x, n))
