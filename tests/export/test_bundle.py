"""Deployment bundles (export/bundle.py) built from a tiny real classifier.

The classifier: a linear 4-digit model fitted in closed form (ridge regression) on the MFCCs of
real FSDD clips, built directly as an ONNX graph (Reshape → MatMul → Add) and quantized to int8
QDQ with :func:`quantize_int8`; for the TFLite side, the same weights as a full-int8 TFLite model
(int8 in/out). Front ends: :func:`export_frontend_onnx` / :func:`export_frontend_tflite`.
:func:`build_inputs` is also used by tests/devices/test_deploy.py (loaded by path).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from export_toys import tflite_int8_linear

DATA = Path("/work/shared/data")
FSDD = DATA / "fsdd" / "recordings"
LABELS = ["zero", "one", "two", "three"]
SPEAKERS = ("george", "jackson", "lucas", "nicolas")
# clips the classifier was fitted on: clear margins, so label comparisons are robust
CLIPS = [FSDD / f"{d}_{s}_{i}.wav" for d, s, i in ((0, "jackson", 5), (2, "lucas", 10), (3, "george", 15))]

pytestmark = pytest.mark.skipif(not FSDD.is_dir(), reason="shared sample data (FSDD) not present")


def _cfg() -> Any:
    from edgenas.spec import DataConfig

    return DataConfig(sample_rate=8000)


def _spec() -> Any:
    from edgenas.spec import ArchSpec

    return ArchSpec(task="kws", space="linear-test", space_version=1, num_classes=len(LABELS), data=_cfg(),
                    choices={"head": "linear"})


def _features(files: list[Path]) -> np.ndarray:
    import torch

    from edgenas.datasets.audio import fit_length, load_audio
    from edgenas.datasets.features import mfcc

    cfg = _cfg()
    waves = np.stack([fit_length(load_audio(f, cfg.sample_rate), cfg.clip_samples) for f in files]).astype(np.float32)
    with torch.no_grad():
        return mfcc(torch.from_numpy(waves), cfg).numpy()[:, None]  # [N, 1, 49, 10]


def _ridge(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    flat = x.reshape(len(x), -1).astype(np.float64)
    mean = flat.mean(0)
    xc = flat - mean
    w = np.linalg.solve(xc.T @ xc + 1e3 * np.eye(xc.shape[1]), xc.T @ (np.eye(len(LABELS))[y] - 0.25))
    b = 0.25 - mean @ w
    return w.astype(np.float32), b.astype(np.float32)


def _onnx_linear(w: np.ndarray, b: np.ndarray, path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    t, m = _cfg().feature_shape
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["features", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "W"], ["mm"]),
         helper.make_node("Add", ["mm", "B"], ["logits"])],
        "linear_kws",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 1, t, m])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, len(LABELS)])],
        [numpy_helper.from_array(np.array([1, t * m], np.int64), "shape"), numpy_helper.from_array(w, "W"),
         numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def build_inputs(d: Path, tflite: bool = False) -> dict[str, Any]:
    """The make_bundle inputs of the tiny classifier, written under ``d``: ``{"models", "frontends",
    "labels", "spec", "expected" (label per CLIPS entry, from the int8 ONNX classifier)}``."""
    from edgenas.export.frontend import export_frontend_onnx, export_frontend_tflite
    from edgenas.export.onnx_export import quantize_int8, run_onnx

    d.mkdir(parents=True, exist_ok=True)
    train = [FSDD / f"{dg}_{s}_{i}.wav" for dg in range(4) for s in SPEAKERS for i in range(5, 50, 5)]
    x = _features(train)
    w, b = _ridge(x, np.array([int(f.name[0]) for f in train]))
    fp32 = _onnx_linear(w, b, d / "linear.fp32.onnx")
    models = {"onnx": quantize_int8(fp32, d / "linear.int8.onnx", x)}
    fp32.unlink()
    frontends = {"onnx": export_frontend_onnx(_cfg(), d / "fe.onnx")}
    if tflite:
        models["tflite"] = d / "linear.int8.tflite"
        models["tflite"].write_bytes(tflite_int8_linear(w, b, x, _cfg().feature_shape))
        frontends["tflite"] = export_frontend_tflite(_cfg(), d / "fe.tflite")
    logits = run_onnx(models["onnx"], _features(CLIPS))
    return {"models": models, "frontends": frontends, "labels": list(LABELS), "spec": _spec(),
            "expected": [LABELS[int(i)] for i in logits.argmax(1)]}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_inputs(tmp_path_factory.mktemp("inputs"), tflite=True)


@pytest.fixture(scope="module")
def made(inputs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from edgenas.export.bundle import make_bundle

    out = tmp_path_factory.mktemp("out")
    res = make_bundle(out, models=inputs["models"], frontends=inputs["frontends"], labels=inputs["labels"],
                      spec=inputs["spec"], metadata={"run": "tiny", "accuracy": 0.9}, sample=CLIPS[0])
    return {"out": out, "res": res}


EXPECTED_FILES = {"bundle.json", "infer.py", "labels.txt", "data_config.json", "metadata.json", "README.md",
                  "SHA256SUMS", "sample.wav", "model.int8.onnx", "model.int8.tflite", "frontend.onnx",
                  "frontend.tflite"}


def test_classifier_is_sane(inputs: dict[str, Any]) -> None:
    assert inputs["expected"] == ["zero", "two", "three"]


def test_bundle_contents(made: dict[str, Any], inputs: dict[str, Any]) -> None:
    from edgenas.export.bundle_infer import load_bundle
    from edgenas.spec import DataConfig

    out, res = made["out"], made["res"]
    b = Path(res["bundle_dir"])
    assert b == out / "bundle" and Path(res["tarball"]) == out / "bundle.tar.gz"
    assert {p.name for p in b.iterdir()} == EXPECTED_FILES
    assert {f["name"] for f in res["files"]} == EXPECTED_FILES
    for f in res["files"]:
        data = (b / f["name"]).read_bytes()
        assert f["size"] == len(data) > 0 and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert (b / "infer.py").read_bytes() == (Path(__file__).resolve().parents[2] / "export" / "bundle_infer.py").read_bytes()
    assert os.access(b / "infer.py", os.X_OK)
    assert (b / "model.int8.onnx").read_bytes() == inputs["models"]["onnx"].read_bytes()
    assert (b / "frontend.tflite").read_bytes() == inputs["frontends"]["tflite"].read_bytes()
    bundle, _ = load_bundle(str(b))  # infer.py's own validation
    spec = inputs["spec"]
    assert bundle["labels"] == LABELS and bundle["arch_hash"] == spec.hash() == res["arch_hash"]
    assert bundle["model"] == {"tflite": "model.int8.tflite", "onnx": "model.int8.onnx"}
    assert bundle["frontend"] == {"tflite": "frontend.tflite", "onnx": "frontend.onnx"}
    assert (b / "labels.txt").read_text().splitlines() == LABELS
    assert DataConfig.from_dict(json.loads((b / "data_config.json").read_text())) == spec.data
    md = json.loads((b / "metadata.json").read_text())
    import edgenas

    assert md["edgenas_version"] == edgenas.__version__ and md["arch_hash"] == spec.hash()
    assert md["arch_spec"] == spec.to_dict() and md["run"] == "tiny" and md["accuracy"] == 0.9
    q = md["quantization"]
    assert q["onnx"]["scheme"] == "qdq" and q["tflite"]["scheme"] == "full-int8"
    # ONNX activations are uint8 (export.onnx_export.ACTIVATIONS), TFLite's int8
    for fmt, side, dtype, lo, hi in (("onnx", "input", "uint8", 0, 255), ("tflite", "input", "int8", -128, 127),
                                     ("tflite", "output", "int8", -128, 127)):
        assert q[fmt][side]["scale"] > 0 and q[fmt][side]["dtype"] == dtype
        assert lo <= q[fmt][side]["zero_point"] <= hi
    # the ONNX classifier's logits leave its QGemm as float (not requantized)
    assert q["onnx"]["output"] == {"dtype": "float32", "requantized": False, "op": "Gemm"}
    assert md["models"]["tflite"]["inputs"][0]["shape"] == [1, 49, 10, 1]
    assert md["models"]["onnx"]["outputs"][0]["shape"] == [1, 4]
    assert md["frontends"]["onnx"]["inputs"][0]["shape"] == [1, spec.data.clip_samples]
    # the files it was built from, by name: no path of the build machine travels to the board
    sources = [d["source"] for part in ("models", "frontends") for d in md[part].values()]
    assert sources and all("/" not in s for s in sources) and "int8" in md["models"]["tflite"]["source"]
    sums = dict(reversed(line.split("  ")) for line in (b / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == EXPECTED_FILES - {"SHA256SUMS"}
    readme = (b / "README.md").read_text()
    assert "python3 infer.py sample.wav" in readme and "--bench" in readme and "onnxruntime" in readme
    assert "numpy" in readme and "ai-edge-litert" in readme
    assert res["bundle_hash"] == hashlib.sha256((b / "SHA256SUMS").read_bytes()).hexdigest()[:16]
    assert res["formats"] == {"model": ["onnx", "tflite"], "frontend": ["onnx", "tflite"]}


def test_tarball_has_the_same_files(made: dict[str, Any]) -> None:
    res = made["res"]
    b = Path(res["bundle_dir"])
    with tarfile.open(res["tarball"]) as tar:
        members = tar.getmembers()
        names = {m.name for m in members}
        assert names == {"bundle"} | {f"bundle/{n}" for n in EXPECTED_FILES}
        for m in members:
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None and f.read() == (b / m.name.split("/", 1)[1]).read_bytes()
                assert m.uid == 0 and m.mode == (0o755 if m.name.endswith("infer.py") else 0o644)
    data = Path(res["tarball"]).read_bytes()
    assert res["tarball_size"] == len(data) and res["tarball_sha256"] == hashlib.sha256(data).hexdigest()


def _run_infer(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, str(bundle / "infer.py"), *args], capture_output=True, text=True,
                           env=env, timeout=120, cwd=bundle)


def test_infer_runs_from_the_bundle(made: dict[str, Any], inputs: dict[str, Any]) -> None:
    b = Path(made["res"]["bundle_dir"])
    res = _run_infer(b, "sample.wav", "--runtime", "onnx")
    assert res.returncode == 0, res.stderr
    label, score = res.stdout.split()
    assert label == inputs["expected"][0] and 0.25 < float(score) <= 1.0
    res = _run_infer(b, str(CLIPS[1]), "--json", "--bench", "3", "--warmup", "1")  # default: LiteRT route
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["label"] == inputs["expected"][1] and "model.int8.tflite" in out["runtime"]["model"]
    assert 0 < out["bench"]["median_ms"] <= out["bench"]["p90_ms"]


def test_atomic_replace_and_no_leftovers(made: dict[str, Any], inputs: dict[str, Any], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from edgenas.export import bundle as bundle_mod

    out = tmp_path / "out"
    kw = dict(models={"onnx": inputs["models"]["onnx"]}, frontends={"onnx": inputs["frontends"]["onnx"]},
              labels=LABELS, spec=inputs["spec"], metadata={})
    first = bundle_mod.make_bundle(out, sample=CLIPS[0], **kw)  # type: ignore[arg-type]
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "bundle.tar.gz"]
    # a rebuild replaces the bundle (here: without sample.wav) and leaves no temporary folders
    second = bundle_mod.make_bundle(out, **kw)  # type: ignore[arg-type]
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "bundle.tar.gz"]
    assert not (out / "bundle" / "sample.wav").exists() and second["bundle_hash"] != first["bundle_hash"]
    with tarfile.open(out / "bundle.tar.gz") as tar:
        assert "bundle/sample.wav" not in tar.getnames()
    # dying while the tarball is written: the previous bundle stays whole, nothing half-made remains
    before = {p.name: p.read_bytes() for p in (out / "bundle").iterdir()}
    tar_before = (out / "bundle.tar.gz").read_bytes()

    def die(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_mod, "_write_tar", die)
    with pytest.raises(KeyboardInterrupt):
        bundle_mod.make_bundle(out, sample=CLIPS[1], **kw)  # type: ignore[arg-type]
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "bundle.tar.gz"]
    assert {p.name: p.read_bytes() for p in (out / "bundle").iterdir()} == before
    assert (out / "bundle.tar.gz").read_bytes() == tar_before
    monkeypatch.undo()
    # what a process killed between the renames leaves (an old bundle set aside) is swept next time
    (out / ".bundle-old-x" / "bundle").mkdir(parents=True)
    bundle_mod.make_bundle(out, **kw)  # type: ignore[arg-type]
    assert sorted(p.name for p in out.iterdir()) == ["bundle", "bundle.tar.gz"]


def _one_line_export_error(match: str, **kw: Any) -> None:
    from edgenas.errors import ExportError
    from edgenas.export.bundle import make_bundle

    with pytest.raises(ExportError, match=match) as e:
        make_bundle(**kw)
    assert "\n" not in str(e.value)


def test_bad_inputs_are_one_line_export_errors(inputs: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    good = dict(out_dir=out, models={"onnx": inputs["models"]["onnx"]}, frontends={"onnx": inputs["frontends"]["onnx"]},
                labels=LABELS, spec=inputs["spec"], metadata={})
    _one_line_export_error("classifier model file \\(onnx\\) not found: .*missing.onnx",
                           **{**good, "models": {"onnx": tmp_path / "missing.onnx"}})
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    _one_line_export_error("classifier model file \\(tflite\\) is empty", **{**good, "models": {"tflite": empty}})
    _one_line_export_error("is a TFLite model, given as onnx", **{**good, "models": {"onnx": inputs["models"]["tflite"]}})
    _one_line_export_error("not a TFLite model", **{**good, "models": {"tflite": inputs["models"]["onnx"]}})
    _one_line_export_error("no classifier model files given", **{**good, "models": {}})
    _one_line_export_error("unknown classifier model format\\(s\\) 'pt'", **{**good, "models": {"pt": empty}})
    _one_line_export_error("3 labels for a spec with 4 classes", **{**good, "labels": LABELS[:3]})
    _one_line_export_error("not unique", **{**good, "labels": ["a", "a", "b", "c"]})
    _one_line_export_error("front-end model .* takes \\[1, 1, 49, 10\\]",
                           **{**good, "frontends": {"onnx": inputs["models"]["onnx"]}})
    _one_line_export_error("does not match the spec's hash", **{**good, "metadata": {"arch_hash": "0" * 16}})
    bad_wav = tmp_path / "bad.wav"
    bad_wav.write_text("not a wav")
    _one_line_export_error("not a PCM WAV", **{**good, "sample": bad_wav})
    assert not out.exists() or not any(out.iterdir())  # nothing written for bad inputs
