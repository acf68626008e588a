"""How fast is the shipped image front end on LiteRT against its previous formulation, for every data configuration of the image space?

The image front end (``edgenas/export/image_frontend.py``) maps a decoded uint8 image
[1, 32, 32, 3] (CIFAR-10's source size) to the classifier's input: ``/255``, the antialiased
bilinear resize as two matrix products, grey (ITU-R 601 luma) and the per-channel
standardisation. The *previous* formulation (kept here as the baseline, built the way the
exporter built it until 2026-12-03) sliced the batch axis off (``[0]``), applied the luma as a
tensordot before the resize, and standardised with a broadcast MUL and ADD before adding the
batch axis back (``[None]``). The shipped one keeps the 4-D tensor and does grey + standardise as
one 1×1 convolution after the resize (linear maps commute). For each of the space's ten data
configurations (16/24/32/40/48 px × RGB/grey) both files are exported and timed **in one
process, interleaved**: every round invokes each loaded interpreter once in a shuffled order,
each call timed on its own; ``ai_edge_litert`` ``Interpreter(num_threads=1)`` (XNNPACK), the input
set before. Reported: median and p10 per file, old / shipped (a ratio of medians with a 95%
bootstrap interval over rounds) and the max |difference| of the two outputs.

    python bench/image_frontend_speed.py [--rounds 2000]     # ~1 min
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from frontend_speed import _callers, _ratio_ci  # noqa: E402

SOURCE = (32, 32)


def _previous(cfg: Any, norm: Any, path: Path) -> Path:
    """The front end as exported before 2026-12-03 (the baseline)."""
    from edgenas.export.frontend import _import_tf, _quiet_tf
    from edgenas.export.image_frontend import _constants, _identity
    from edgenas.fileio import atomic_write_bytes

    tf = _import_tf()
    rows, cols_t, luma, scale, shift = _constants(cfg, norm)

    @tf.function(input_signature=[tf.TensorSpec([1, *SOURCE, 3], tf.uint8)])
    def frontend(image: Any) -> Any:
        x = tf.cast(image, tf.float32)[0]
        if luma is not None:
            x = tf.tensordot(x, tf.constant(luma), axes=[[2], [0]])
        if _identity(cfg):
            return (x * tf.constant(scale / 255.0) + tf.constant(shift))[None]
        x = tf.einsum("rh,hwc->rwc", tf.constant(rows), x)
        x = tf.einsum("rwc,ws->rsc", x, tf.constant(cols_t))
        return (x * tf.constant(scale) + tf.constant(shift))[None]

    with _quiet_tf():
        conv = tf.lite.TFLiteConverter.from_concrete_functions([frontend.get_concrete_function()], frontend)
        atomic_write_bytes(path, conv.convert())
    return path


def _output(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"]).copy()


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2000)
    a = p.parse_args()
    from edgenas.export.frontend import tflite_op_names
    from edgenas.export.image_frontend import export_image_frontend_tflite
    from edgenas.tasks.image import ImageConfig

    work = a.out / "cache" / "image_frontend_speed"  # the exported files (not kept in git)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (1, *SOURCE, 3), dtype=np.uint8)
    mean, std = np.array([0.49, 0.48, 0.45]), np.array([0.25, 0.24, 0.26])  # CIFAR-like statistics
    files: dict[tuple[str, str], Path] = {}
    diffs, ops = {}, {}
    for r in (16, 24, 32, 40, 48):
        for colour in ("rgb", "grey"):
            cfg = ImageConfig(r, colour, *SOURCE)
            norm = (mean, std) if colour == "rgb" else (mean[:1], std[:1])
            key = cfg.key()
            files[(key, "previous")] = _previous(cfg, norm, work / f"{key}.previous.tflite")
            files[(key, "shipped")] = export_image_frontend_tflite(cfg, work / f"{key}.tflite", norm)
            diffs[key] = float(np.abs(_output(files[(key, "previous")], x) - _output(files[(key, "shipped")], x)).max())
            ops[key] = {k: " ".join(tflite_op_names(files[(key, k)])) for k in ("previous", "shipped")}
    calls = {k: _callers(f, "tflite", x, 1)[0] for k, f in files.items()}
    for c in calls.values():  # warm up
        for _ in range(20):
            c()
    ms: dict[Any, list[float]] = {k: [] for k in calls}
    order = list(calls)
    shuffle = random.Random(0)
    for _ in range(a.rounds):
        shuffle.shuffle(order)
        for k in order:
            ms[k].append(calls[k]())
    boot = np.random.default_rng(1)
    rows, data = [], []
    for key in diffs:
        old, new = np.asarray(ms[(key, "previous")]), np.asarray(ms[(key, "shipped")])
        ratio, lo, hi = _ratio_ci(old[:, None], new[:, None], boot)
        rows.append([key, f"{np.median(old):.4f}", f"{np.median(new):.4f}", f"{np.percentile(new, 10):.4f}",
                     f"{ratio:.1f} [{lo:.1f}, {hi:.1f}]", f"{diffs[key]:.1e}", ops[key]["shipped"]])
        data.append({"data": key, "previous_ms": float(np.median(old)), "shipped_ms": float(np.median(new)),
                     "shipped_p10_ms": float(np.percentile(new, 10)), "ratio": ratio, "ratio_ci": [lo, hi],
                     "max_abs_diff": diffs[key], "ops": ops[key]})
    md = (f"# Image front end on litert-cpu: shipped vs previous formulation\n\n{common.cpu_model()}, 1 thread, "
          f"{a.rounds} interleaved rounds, input uint8 [1, 32, 32, 3].\n\n"
          + common.table(["data configuration", "previous ms", "shipped ms", "shipped p10 ms", "previous / shipped [95%]",
                          "max |diff|", "shipped ops"], rows))
    common.write(a.out, "image_frontend_speed", {"rounds": a.rounds, "rows": data, **common.environment()}, md)
    print(md)


if __name__ == "__main__":
    main()
