"""``edgenas search --task image`` end to end on a small real image folder (CIFAR-10 JPEGs from
../shared/data, copied into the test's tmp dir), its bundle on the board script, the image front
end against the training transform, bad image inputs, and a kill -9 mid-search then --resume.

Real parts only: real JPEG files decoded by Pillow, real search and training, real ONNX and
TFLite export and int8 quantization, ONNX Runtime and LiteRT, a real SQLite store, a real
process killed by SIGKILL.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SHARED_CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_images"
CLASSES = ("airplane", "automobile", "frog")
# a small space: two resolutions and colours, narrow stages (the search mechanics, not accuracy)
TINY = ["--set", "space.resolutions=[16,24]", "--set", "space.widths=[[8],[8,16],[16]]", "--set",
        "space.stem_widths=[8]", "--set", "space.blocks=[1,2,1]", "--set", "train.batch_size=32",
        "--set", "search.batch_size=32"]

pytestmark = pytest.mark.skipif(not SHARED_CIFAR.is_dir(), reason="../shared/data/cifar10_images is missing")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_thread_per_module: None) -> None:
    """One torch thread while this module runs (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 classes × (24 train, 8 val) real CIFAR-10 JPEGs."""
    root = tmp_path_factory.mktemp("cifar-small")
    for split, n in (("train", 24), ("val", 8)):
        for c in CLASSES:
            (root / split / c).mkdir(parents=True)
            for f in sorted((SHARED_CIFAR / split / c).iterdir())[:n]:
                shutil.copyfile(f, root / split / c / f.name)
    return root


@pytest.fixture(scope="module")
def image_run(images: Path, tmp_path_factory: pytest.TempPathFactory, cli_in) -> Path:
    base = tmp_path_factory.mktemp("image-run")
    res = cli_in(base, ["search", "--task", "image", "--data", str(images), "--device", "onnxruntime-cpu",
                        "--max-ram-kb", "64", "--max-flash-kb", "256", "--search-epochs", "1", "--epochs", "1",
                        "--strategy", "gumbel-hard", "--runs-dir", str(base / "runs"), "--name", "img", "--json",
                        "--quiet", *TINY])
    assert res.code == 0, res.err
    return base / "runs" / "image" / "img"


@pytest.mark.slow
def test_image_search_ships_a_verified_bundle(image_run: Path) -> None:
    m = json.loads((image_run / "metrics.json").read_text())
    assert m["task"] == "image" and m["data_config"]["resolution"] in (16, 24)
    assert m["data_config"]["colour"] in ("rgb", "grey")
    for b in ("ram", "flash"):  # end to end: the front end's file and buffers are part of it
        assert m["budgets"][b]["scope"] == "end-to-end" and m["budgets"][b]["frontend"]["measured"] > 0
    report = json.loads((image_run / "export" / "report.json").read_text())
    for fmt in ("onnx", "tflite"):
        assert report["models"][f"{fmt}-int8"]["status"] == "ok"
        fe = report["frontend"][fmt]
        assert fe["status"] == "ok" and fe["max_abs_diff_vs_training_features"] < 1e-4
        assert abs(fe["raw_input_vs_torch_points"]) <= 10.0  # 24 test images: one is 4 points
    assert "TRANSPOSE ×0" in (image_run / "export" / "report.md").read_text()
    assert (image_run / "report.md").is_file() and (image_run / "plots" / "search.png").is_file()
    bundle = json.loads((image_run / "bundle" / "bundle.json").read_text())
    assert bundle["input"] == "image" and bundle["task"] == "image"


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_bundle_script_classifies_an_image(image_run: Path, images: Path, runtime: str) -> None:
    """infer.py (no edgenas, no torch) on the bundle's sample and on a PNG of another size and mode:
    the label is the int8 pipeline's, as the exporter verified it."""
    from PIL import Image

    b = image_run / "bundle"
    samples = sorted(b.glob("sample.*"))
    assert samples and samples[0].suffix == ".jpg"
    out = subprocess.run([sys.executable, str(b / "infer.py"), str(samples[0]), "--json", "--runtime", runtime,
                          "--bench", "3"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["label"] in CLASSES and r["bench"]["frontend_median_ms"] > 0
    # a grey 64x48 PNG is converted and resized as training images are
    png = image_run.parent / "grey.png"
    Image.open(samples[0]).convert("L").resize((64, 48)).save(png)
    out = subprocess.run([sys.executable, str(b / "infer.py"), str(png), "--runtime", runtime],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split()[0] in CLASSES, out.stderr
    # not an image: one line, exit 2
    out = subprocess.run([sys.executable, str(b / "infer.py"), str(b / "bundle.json")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.startswith("error: cannot read image") and "Traceback" not in out.stderr


def test_image_front_end_is_the_training_transform(tmp_path: Path) -> None:
    """ONNX Runtime and LiteRT run the exported front end of upscaled, downscaled, grey and RGB
    configurations to the training inputs (standardised per channel) within float rounding."""
    pytest.importorskip("tensorflow")
    from edgenas.datasets.images import transform
    from edgenas.tasks import get_task
    from edgenas.tasks.image import ImageConfig

    fe = get_task("image").frontend()
    px = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for cfg in (ImageConfig(16, "rgb"), ImageConfig(48, "grey"), ImageConfig(32, "rgb")):
        ref = transform(px, cfg)
        norm = (ref.mean(axis=(0, 2, 3)), ref.std(axis=(0, 2, 3)) + 1e-6)
        want = (ref - norm[0][None, :, None, None]) / norm[1][None, :, None, None]
        for fmt in ("onnx", "tflite"):
            path = fe.export(cfg, fmt, tmp_path / f"{cfg.key()}.{fmt}", norm)
            got = fe.run(path, px)
            assert got.shape == (4, *cfg.input_shape)
            np.testing.assert_allclose(got, want, atol=1e-4)
            if fmt == "tflite":  # grey + standardise as one 1×1 convolution; no slicing around it
                from edgenas.export.frontend import tflite_op_names

                ops = tflite_op_names(path)
                assert ops.count("CONV_2D") == 1 and "STRIDED_SLICE" not in ops and "MUL" not in ops, ops
                if cfg.resolution == 32:
                    assert ops == ["CAST", "CONV_2D"], ops
    with pytest.raises(Exception, match="uint8"):
        fe.run(path, px.astype(np.float32))


def test_bad_image_inputs_are_one_line_errors(images: Path, tmp_path: Path, cli, isolated_env) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(images, broken)
    (broken / "train" / "frog" / "zz.jpg").write_bytes(b"not a jpeg at all")
    base = ["search", "--task", "image", "--device", "onnxruntime-cpu", "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    for i, (data, expect) in enumerate(((broken, "zz.jpg"), (tmp_path / "nowhere", "does not exist"),
                                        (None, "needs --data"))):
        res = cli(base + ["--name", f"bad{i}"] + (["--data", str(data)] if data else []))
        lines = res.err_lines()
        assert res.code != 0 and len(lines) == 1 and "Traceback" not in res.err, res.err
        assert expect in lines[0], lines[0]
    empty = tmp_path / "empty"
    shutil.copytree(images, empty)
    shutil.rmtree(empty / "val" / "frog")
    (empty / "val" / "frog").mkdir()
    res = cli(base + ["--name", "empty", "--data", str(empty)])
    assert res.code != 0 and "has no images" in res.err_lines()[0]
    # another task's space is refused
    res = cli(base + ["--name", "other", "--data", str(images), "--space", "kws-dscnn"])
    assert res.code != 0 and "kws" in res.err_lines()[0]


@pytest.mark.slow
def test_kill_9_mid_search_then_resume_ends_with_a_report(images: Path, tmp_path: Path) -> None:
    env = {**os.environ, "EDGENAS_CACHE": str(tmp_path / "cache"), "EDGENAS_STORE": str(tmp_path / "s.sqlite"),
           "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    exe = [sys.executable, "-m", "edgenas.cli"]
    argv = ["search", "--task", "image", "--data", str(images), "--device", "onnxruntime-cpu", "--max-ram-kb", "64",
            "--search-epochs", "3", "--epochs", "1", "--strategy", "gumbel-hard", "--runs-dir", str(runs),
            "--name", "k9", "--quiet", *TINY]
    proc = subprocess.Popen(exe + argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    events = runs / "image" / "k9" / "events.jsonl"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and proc.poll() is None:  # wait for the search's first epoch
            if events.is_file() and '"search.epoch"' in events.read_text():
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    state = json.loads((runs / "image" / "k9" / "state.json").read_text())
    assert "search" not in state["stages"] and not (runs / "image" / "k9" / "report.md").exists()
    res = subprocess.run(exe + ["search", "--runs-dir", str(runs), "--name", "k9", "--resume", "--quiet"], env=env,
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    assert (runs / "image" / "k9" / "report.md").is_file() and (runs / "image" / "k9" / "bundle.tar.gz").is_file()
    import sqlite3

    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


@pytest.mark.slow
def test_calibrate_image_then_search_uses_the_predictor(images: Path, tmp_path: Path, cli, isolated_env,
                                                        one_thread_per_module) -> None:
    space = [a for pair in zip(TINY[::2], TINY[1::2]) if pair[1].startswith("space.") for a in pair]
    res = cli(["calibrate", "--device", "onnxruntime-cpu", "--task", "image", "--samples", "12", "--runs", "5",
               *space, "--json", "--quiet"])
    assert res.code == 0, res.err
    rep = res.json()
    assert rep["samples"] == 12 and rep["space"] == "image-mbv2"
    pred = Path(rep["predictor"])
    assert pred.is_file() and "image-mbv2" in pred.name
    # every data configuration's front end (2 resolutions × 2 colours) was measured and enters the total's error
    assert sorted(rep["frontends"]["table_ms"]) == sorted(f"img{r}_{c}_src32x32" for r in (16, 24) for c in ("rgb", "grey"))
    assert 0 < rep["frontends"]["share_of_total"] < 1 and rep["holdout_errors_end_to_end"]["learned"]["n"] == 2
    res = cli(["search", "--task", "image", "--data", str(images), "--device", "onnxruntime-cpu",
               "--max-latency-ms", "5", "--search-epochs", "1", "--epochs", "1", "--strategy", "gumbel-hard",
               "--runs-dir", str(tmp_path / "runs"), "--name", "cal", "--json", "--quiet", *TINY])
    assert res.code == 0, res.err[-2000:]
    m = res.json()
    assert m["latency_ms"]["predicted_by"] == "learned"
    assert m["budgets"]["latency"]["frontend"]["measured"] > 0 and m["budgets"]["latency"]["measured"] > 0
