"""``edgenas search --task sr`` end to end on a small real image folder (BSD68 / Set14 / Set5
PNGs from ../shared/data/sisr, cropped into the test's tmp dir): the search under an end-to-end RAM
budget, its int8 exports, the bundle's board script writing a ×2 PNG on both runtimes, and bad
inputs as one-line errors.

Real parts only: real PNG files decoded by Pillow, real search and training, real ONNX and TFLite
export and int8 quantization, ONNX Runtime and LiteRT, a real SQLite store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SHARED_SISR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sisr"
# a small space: one width, two blocks, both colours and two tile sizes (the mechanics, not PSNR)
TINY = ["--set", "space.widths=8", "--set", "space.max_blocks=2", "--set", "space.tiles=32,48",
        "--set", "space.frame=96x64", "--set", "train.batch_size=32", "--set", "search.batch_size=32"]

pytestmark = pytest.mark.skipif(not SHARED_SISR.is_dir(), reason="../shared/data/sisr is missing")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread(one_thread_per_module: None) -> None:
    """One torch thread while this module runs (see tests/conftest.py)."""


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train: 4 BSD68 images, val: 2 Set14, test: 2 Set5, each cropped to its top-left 128×96."""
    from PIL import Image

    root = tmp_path_factory.mktemp("sisr-small")
    for split, folder, n in (("train", "BSD68", 4), ("val", "Set14", 2), ("test", "Set5", 2)):
        (root / split).mkdir()
        for f in sorted((SHARED_SISR / folder).glob("*.png"))[:n]:
            Image.open(f).convert("RGB").crop((0, 0, 128, 96)).save(root / split / f.name)
    return root


@pytest.fixture(scope="module")
def sr_run(images: Path, tmp_path_factory: pytest.TempPathFactory, cli_in) -> Path:
    base = tmp_path_factory.mktemp("sr-run")
    res = cli_in(base, ["search", "--task", "sr", "--scale", "2", "--data", str(images), "--device",
                        "onnxruntime-cpu", "--max-ram-kb", "160", "--search-epochs", "2", "--epochs", "1",
                        "--runs-dir", str(base / "runs"), "--name", "sr", "--json", "--quiet", *TINY])
    assert res.code == 0, res.err
    return base / "runs" / "sr" / "sr"


@pytest.mark.slow
def test_sr_search_ships_a_verified_bundle(sr_run: Path) -> None:
    m = json.loads((sr_run / "metrics.json").read_text())
    d = m["data_config"]
    assert m["task"] == "sr" and d["scale"] == 2 and d["colour"] in ("y", "rgb") and d["tile"] in (32, 48)
    ram = m["budgets"]["ram"]
    assert ram["scope"] == "end-to-end" and ram["frontend"]["measured"] > 0 and ram["holds"]
    assert ram["measured"] == pytest.approx(ram["frontend"]["measured"] + ram["model"]["measured"])
    report = json.loads((sr_run / "export" / "report.json").read_text())
    assert report["metric"]["name"] == "psnr"
    for fmt in ("onnx", "tflite"):
        assert report["models"][f"{fmt}-int8"]["status"] == "ok"
        assert report["frontend"][fmt]["status"] == "ok"
    # a trained (if briefly) network: int8 within a few dB of fp32, both well above zero
    fp32, int8 = report["test_acc_fp32_torch"], report["models"]["tflite-int8"]["test_acc"]
    assert 15.0 < int8 and abs(fp32 - int8) < 3.0, (fp32, int8)
    rec = report["models"]["tflite-int8"]
    assert rec["peak_activation_bytes"] == rec["estimated_peak_activation_bytes"]
    assert "dB" in (sr_run / "report.md").read_text()
    bundle = json.loads((sr_run / "bundle" / "bundle.json").read_text())
    assert bundle["input"] == "sr" and bundle["task"] == "sr"
    assert not (sr_run / "bundle" / "labels.txt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_bundle_script_upscales_a_png(sr_run: Path, images: Path, runtime: str, tmp_path: Path) -> None:
    """infer.py (no edgenas, no torch) upscales the bundle's LR sample and an odd-sized grey PNG
    to exactly twice their size, with the shipped model's quality on the sample."""
    from PIL import Image

    b = sr_run / "bundle"
    sample = b / "sample.png"
    lr = np.asarray(Image.open(sample).convert("RGB"))
    assert lr.shape == (48, 64, 3)  # the first test image (128×96) downscaled ×2, as the test split is
    out_png = tmp_path / f"sr_{runtime}.png"
    res = subprocess.run([sys.executable, str(b / "infer.py"), str(sample), "--json", "--runtime", runtime,
                          "--out", str(out_png), "--bench", "2", "--warmup", "1"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    sr = np.asarray(Image.open(out_png).convert("RGB"))
    assert sr.shape == (96, 128, 3) and r["out_size"] == [96, 128] and r["tiles"] >= 2
    assert r["bench"]["median_ms"] > 0 and r["bench"]["tiles"] == r["tiles"]
    # against the HR original: a real upscaling (a 1-epoch network on 4 images is still below
    # bicubic, but far above what a wrong tile order, stitch or chroma path scores)
    from edgenas.datasets.sisr import psnr, to_chw_float

    hr = np.asarray(Image.open(sorted((images / "test").glob("*.png"))[0]).convert("RGB"))
    assert psnr(to_chw_float(sr), to_chw_float(hr), 2) > 25.0
    # an odd-sized grey PNG: converted, tiled with edge padding, output exactly ×2
    grey = tmp_path / "grey.png"
    Image.fromarray(lr[:37, :53].mean(axis=2).astype(np.uint8), mode="L").save(grey)
    res = subprocess.run([sys.executable, str(b / "infer.py"), str(grey), "--runtime", runtime],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("wrote ") and Image.open(tmp_path / "grey_x2.png").size == (106, 74)
    # not an image: one line, exit 2, nothing written
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    res = subprocess.run([sys.executable, str(b / "infer.py"), str(bad)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.startswith("error: cannot read image"), res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "bad_x2.png").exists()


def test_bad_sr_inputs_are_one_line_errors(images: Path, tmp_path: Path, cli, isolated_env) -> None:
    base = ["search", "--task", "sr", "--device", "onnxruntime-cpu", "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    no_test = tmp_path / "no-test"
    (no_test / "train").mkdir(parents=True)
    broken = tmp_path / "broken"
    for split in ("train", "val", "test"):
        (broken / split).mkdir(parents=True)
        for f in (images / split).iterdir():
            (broken / split / f.name).write_bytes(f.read_bytes())
    (broken / "train" / "zz.png").write_bytes(b"not a png at all")
    cases = [(["--data", str(tmp_path / "nowhere")], "does not exist"),
             (["--data", str(no_test)], "neither test/ nor val/"),
             (["--data", str(broken)], "zz.png"),
             (["--data", str(images), "--scale", "5"], "scale"),
             (["--data", str(images), "--frame", "wide"], "WxH")]
    for i, (extra, expect) in enumerate(cases):
        res = cli(base + ["--name", f"bad{i}"] + extra)
        lines = res.err_lines()
        assert res.code != 0 and len(lines) == 1 and "Traceback" not in res.err, res.err
        assert expect in lines[0], lines[0]
