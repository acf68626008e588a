"""The image front end (resize, grey, standardise of an ImageConfig) as its own float model.

On a board the pipeline is::

    decoded image uint8 [1, H, W, 3] ──► front-end model (float) ──► int8 classifier

and the front end reproduces :func:`edgenas.datasets.images.transform` (the training inputs)
exactly: ``x / 255`` → optional grey (ITU-R 601 luma, a [3] → [1] product) → the antialiased
bilinear resize as two matrix products (rows ``[r, H]``, columns ``[r, W]``, with the 1/255 folded
into the row matrix) → per-channel ``(x - mean) / std`` when ``norm`` is given (folded into the
last product's scale and a bias; at the source size the resize is the identity and is left
out). In TFLite the grey product and the standardisation are one 1×1 convolution (before the
resize for grey, after it for RGB: linear maps commute; equal to ~1e-6). Input ``image`` uint8 [1, H, W, 3] (H × W the dataset's source
size); output ``features`` [1, C, r, r] (ONNX, NCHW, what the ONNX classifier eats) or
[1, r, r, C] (TFLite, NHWC, what the TFLite classifier eats). One implementation, ``"matmul"``.

A standardisation alone (native size, RGB) could be folded exactly into the int8 classifier's
input quantization, but the resize and the grey conversion cannot, so every configuration ships
a front-end model: one code path, verified the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import ExportError
from edgenas.export.onnx_export import OPSET, QUANT_FP32, model_metadata
from edgenas.export.tflite_export import embed_metadata
from edgenas.fileio import atomic_write_bytes
from edgenas.tasks.base import FrontEnd

IMAGE_NAME = "image"
FEATURES_NAME = "features"
FRONTEND_KIND = "image-resize"
IMPL = "matmul"

Norm = tuple[np.ndarray, np.ndarray] | None


def _constants(cfg: Any, norm: Norm) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """(rows/255 [r, H], cols^T [W, r], luma [3, 1] or None, scale [C], shift [C]): output =
    (rows/255 @ x_c @ cols^T) * scale + shift per channel c."""
    from edgenas.datasets.images import front_end_matrices

    rows, cols, luma = front_end_matrices(cfg, (cfg.source_h, cfg.source_w))
    c = cfg.channels
    if norm is None:
        scale, shift = np.ones(c, np.float32), np.zeros(c, np.float32)
    else:
        mean, std = (np.asarray(v, np.float32).reshape(-1) for v in norm)
        if mean.size not in (1, c) or std.size not in (1, c):
            raise ExportError(f"image front end: norm has {mean.size} means for {c} channel(s)")
        scale = np.broadcast_to(1.0 / std, (c,)).astype(np.float32)
        shift = np.broadcast_to(-mean / std, (c,)).astype(np.float32)
    return ((rows / 255.0).astype(np.float32), np.ascontiguousarray(cols.T), None if luma is None else luma[:, None],
            scale, shift)


def _identity(cfg: Any) -> bool:
    """The resize is the identity (the resolution is the source size): the front end skips it."""
    return cfg.resolution == cfg.source_h == cfg.source_w


def frontend_metadata(cfg: Any, layout: str, norm: Norm = None) -> dict[str, str]:
    return model_metadata(
        None, QUANT_FP32, artifact="frontend", frontend=FRONTEND_KIND, frontend_impl=IMPL,
        data_config=json.dumps(cfg.to_dict(), sort_keys=True), data_key=cfg.key(),
        input=f"{IMAGE_NAME} uint8 [1, {cfg.source_h}, {cfg.source_w}, 3] RGB", output_layout=layout,
        normalization=json.dumps(None if norm is None else {"mean": [float(v) for v in np.ravel(norm[0])],
                                                            "std": [float(v) for v in np.ravel(norm[1])]}))


def export_image_frontend_onnx(cfg: Any, path: str | Path, norm: Norm = None) -> Path:
    """Float ONNX front end: ``image`` uint8 [1, H, W, 3] → ``features`` [1, C, r, r]."""
    from onnx import TensorProto, helper, numpy_helper

    from edgenas.export.onnx_export import _atomic_save, _set_metadata, check_model

    rows, cols_t, luma, scale, shift = _constants(cfg, norm)
    c, r = cfg.channels, cfg.resolution
    inits = [numpy_helper.from_array(rows, "rows"), numpy_helper.from_array(cols_t, "cols_t"),
             numpy_helper.from_array(scale.reshape(1, c, 1, 1), "scale"),
             numpy_helper.from_array(shift.reshape(1, c, 1, 1), "shift")]
    nodes = [helper.make_node("Cast", [IMAGE_NAME], ["xf"], to=TensorProto.FLOAT)]
    x = "xf"
    if luma is not None:
        inits.append(numpy_helper.from_array(luma.astype(np.float32), "luma"))
        nodes.append(helper.make_node("MatMul", [x, "luma"], ["grey"]))  # [1, H, W, 1]
        x = "grey"
    nodes.append(helper.make_node("Transpose", [x], ["chw"], perm=[0, 3, 1, 2]))  # [1, C, H, W]
    if _identity(cfg):  # native size: no resize, the 1/255 goes into the scale
        inits[2] = numpy_helper.from_array((scale / 255.0).astype(np.float32).reshape(1, c, 1, 1), "scale")
        nodes.append(helper.make_node("Mul", ["chw", "scale"], ["r3"]))
    else:
        nodes += [helper.make_node("MatMul", ["rows", "chw"], ["r1"]),  # [1, C, r, W]
                  helper.make_node("MatMul", ["r1", "cols_t"], ["r2"]),  # [1, C, r, r]
                  helper.make_node("Mul", ["r2", "scale"], ["r3"])]
    nodes.append(helper.make_node("Add", ["r3", "shift"], [FEATURES_NAME]))
    graph = helper.make_graph(nodes, "edgenas_image_frontend",
                              [helper.make_tensor_value_info(IMAGE_NAME, TensorProto.UINT8, [1, cfg.source_h, cfg.source_w, 3])],
                              [helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, [1, c, r, r])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgenas")
    model.ir_version = min(model.ir_version, 10)
    _set_metadata(model, frontend_metadata(cfg, "NCHW", norm))
    path = Path(path)
    check_model(model, f"image front end {path}")
    _atomic_save(model, path)
    return path


def export_image_frontend_tflite(cfg: Any, path: str | Path, norm: Norm = None) -> Path:
    """Float TFLite front end: ``image`` uint8 [1, H, W, 3] → [1, r, r, C] (NHWC), builtins only."""
    from edgenas.export.frontend import _import_tf, convert_builtins

    tf = _import_tf()
    rows, cols_t, luma, scale, shift = _constants(cfg, norm)
    path = Path(path)

    # the channel mix (grey: the luma row; RGB: the identity) and the standardisation as one 1×1
    # convolution, before the resize for grey (one channel to resize) and after it for RGB: the
    # fast path of every runtime (as [0]-slicing + broadcast MUL/ADD, the same arithmetic ran
    # 4–10× slower on LiteRT: bench/image_frontend_speed.py)
    mix = np.eye(3, dtype=np.float32) if luma is None else luma.astype(np.float32)
    kernel = tf.constant((mix * (scale / 255.0 if _identity(cfg) else scale)[None, :]).astype(np.float32)[None, None])
    bias = tf.constant(shift)

    @tf.function(input_signature=[tf.TensorSpec([1, cfg.source_h, cfg.source_w, 3], tf.uint8, name=IMAGE_NAME)])
    def frontend(image: Any) -> Any:
        x = tf.cast(image, tf.float32)  # [1, H, W, 3]
        if _identity(cfg):  # at the source size the resize is the identity and the 1/255 goes into the kernel
            return {FEATURES_NAME: tf.nn.conv2d(x, kernel, 1, "VALID") + bias}
        grey = luma is not None
        if grey:  # the scale commutes with the resize; the shift does not (rows carry the 1/255)
            x = tf.nn.conv2d(x, kernel, 1, "VALID")
        x = tf.einsum("rh,bhwc->brwc", tf.constant(rows), x)
        x = tf.einsum("brwc,ws->brsc", x, tf.constant(cols_t))
        return {FEATURES_NAME: (x if grey else tf.nn.conv2d(x, kernel, 1, "VALID")) + bias}

    flat = embed_metadata(convert_builtins(frontend, "image front-end", path), frontend_metadata(cfg, "NHWC", norm))
    atomic_write_bytes(path, flat)
    return path


def run_image_frontend(path: str | Path, images: np.ndarray) -> np.ndarray:
    """Model inputs [N, C, r, r] float32 of uint8 ``images`` [N, H, W, 3] through a front-end file
    of either format (the TFLite NHWC output is transposed to NCHW)."""
    from edgenas.export.frontend import run_each

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"front-end model not found: {path}")
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
        raise ExportError(f"images must be uint8 [N, H, W, 3], got {x.dtype} {list(x.shape)}")
    return run_each(path, x, "images")


class ImageFrontEnd(FrontEnd):
    """The image task's front end (:class:`edgenas.tasks.FrontEnd`): one implementation."""

    kind = FRONTEND_KIND
    raw_input = "image"

    def raw_shape(self, data: Any) -> tuple[int, ...]:
        return (1, data.source_h, data.source_w, 3)

    def describe(self, data: Any) -> str:
        return (f"uint8 {data.source_h}×{data.source_w} RGB image → {data.resolution}×{data.resolution} "
                f"{'RGB' if data.colour == 'rgb' else 'grey'}, standardised")

    def resolve_impl(self, data: Any, fmt: str, impl: str | None = None) -> str:
        if fmt not in ("onnx", "tflite"):
            raise ExportError(f"unknown front-end format {fmt!r}; choose one of onnx, tflite")
        if impl not in (None, IMPL):
            raise ExportError(f"unknown image front-end implementation {impl!r}; the only one is {IMPL!r}")
        return IMPL

    def export(self, data: Any, fmt: str, path: Any, norm: Any = None, impl: str | None = None) -> Path:
        self.resolve_impl(data, fmt, impl)
        return (export_image_frontend_onnx if fmt == "onnx" else export_image_frontend_tflite)(data, path, norm)

    def run(self, path: Any, raw: np.ndarray) -> np.ndarray:
        return run_image_frontend(path, raw)

    def reference(self, raw: np.ndarray, data: Any) -> np.ndarray:
        from edgenas.datasets.images import transform

        return transform(raw, data)

    def sources(self) -> list[str]:
        from edgenas.datasets import images

        return [__file__, images.__file__]
