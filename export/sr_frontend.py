"""The super-resolution front end (one LR tile: uint8 RGB → [0, 1] → Y or RGB) as its own float model.

On a board the pipeline is, per tile of the frame::

    LR tile uint8 [1, t, t, 3] ──► front-end model (float) ──► int8 SR model ──► [1, C, t·s, t·s]

and the front end reproduces the model inputs of training (:mod:`edgenas.datasets.sisr`):
``x / 255`` then, for colour ``y``, BT.601 studio-swing luma ``(16 + 65.481 R + 128.553 G +
24.966 B) / 255`` on [0, 1] values. Both are one 1×1 convolution ([3] → [C], the 1/255 folded in,
plus a bias): in ONNX a MatMul + Add before the NHWC → NCHW Transpose, in TFLite a CONV_2D (NHWC
out, what the TFLite SR model eats). Input ``image`` uint8 [1, t, t, 3] (t = ``tile_in``); output
``features`` [1, C, t, t] (ONNX) or [1, t, t, C] (TFLite). One implementation, ``"conv1x1"``.
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
FRONTEND_KIND = "sr-tile"
IMPL = "conv1x1"


def mix(cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(kernel [3, C], bias [C]) float32: features = uint8 pixels @ kernel + bias."""
    from edgenas.datasets.sisr import YCBCR_MATRIX, YCBCR_OFFSET

    if cfg.colour == "y":
        return ((YCBCR_MATRIX[0] / 255.0 / 255.0)[:, None].astype(np.float32),
                np.array([YCBCR_OFFSET[0] / 255.0], np.float32))
    return (np.eye(3) / 255.0).astype(np.float32), np.zeros(3, np.float32)


def frontend_metadata(cfg: Any, layout: str) -> dict[str, str]:
    t = cfg.tile_in
    return model_metadata(None, QUANT_FP32, artifact="frontend", frontend=FRONTEND_KIND, frontend_impl=IMPL,
                          data_config=json.dumps(cfg.to_dict(), sort_keys=True), data_key=cfg.key(),
                          input=f"{IMAGE_NAME} uint8 [1, {t}, {t}, 3] RGB (one LR tile)", output_layout=layout,
                          normalization=json.dumps(None))


def export_sr_frontend_onnx(cfg: Any, path: str | Path) -> Path:
    """Float ONNX front end: ``image`` uint8 [1, t, t, 3] → ``features`` [1, C, t, t]."""
    from onnx import TensorProto, helper, numpy_helper

    from edgenas.export.onnx_export import _atomic_save, _set_metadata, check_model

    kernel, bias = mix(cfg)
    c, t = cfg.channels, cfg.tile_in
    inits = [numpy_helper.from_array(kernel, "kernel"), numpy_helper.from_array(bias, "bias")]
    nodes = [helper.make_node("Cast", [IMAGE_NAME], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "kernel"], ["mixed"]),  # [1, t, t, C]
             helper.make_node("Add", ["mixed", "bias"], ["biased"]),
             helper.make_node("Transpose", ["biased"], [FEATURES_NAME], perm=[0, 3, 1, 2])]
    graph = helper.make_graph(nodes, "edgenas_sr_frontend",
                              [helper.make_tensor_value_info(IMAGE_NAME, TensorProto.UINT8, [1, t, t, 3])],
                              [helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, [1, c, t, t])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgenas")
    model.ir_version = min(model.ir_version, 10)
    _set_metadata(model, frontend_metadata(cfg, "NCHW"))
    path = Path(path)
    check_model(model, f"SR front end {path}")
    _atomic_save(model, path)
    return path


def export_sr_frontend_tflite(cfg: Any, path: str | Path) -> Path:
    """Float TFLite front end: ``image`` uint8 [1, t, t, 3] → [1, t, t, C] (NHWC), one CONV_2D."""
    from edgenas.export.frontend import _import_tf, convert_builtins

    tf = _import_tf()
    kernel, bias = mix(cfg)
    t = cfg.tile_in
    k, b = tf.constant(kernel[None, None]), tf.constant(bias)

    @tf.function(input_signature=[tf.TensorSpec([1, t, t, 3], tf.uint8, name=IMAGE_NAME)])
    def frontend(image: Any) -> Any:
        return {FEATURES_NAME: tf.nn.conv2d(tf.cast(image, tf.float32), k, 1, "VALID") + b}

    path = Path(path)
    flat = embed_metadata(convert_builtins(frontend, "SR front-end", path), frontend_metadata(cfg, "NHWC"))
    atomic_write_bytes(path, flat)
    return path


class SRFrontEnd(FrontEnd):
    """The sr task's front end (:class:`edgenas.tasks.FrontEnd`): one implementation."""

    kind = FRONTEND_KIND
    raw_input = "sr"  # the board script reads an image and writes one (export/bundle_infer.py)

    def raw_shape(self, data: Any) -> tuple[int, ...]:
        return (1, data.tile_in, data.tile_in, 3)

    def describe(self, data: Any) -> str:
        return (f"uint8 {data.tile_in}×{data.tile_in} RGB LR tile → "
                f"{'BT.601 Y' if data.colour == 'y' else 'RGB'} in [0, 1], per tile")

    def resolve_impl(self, data: Any, fmt: str, impl: str | None = None) -> str:
        if fmt not in ("onnx", "tflite"):
            raise ExportError(f"unknown front-end format {fmt!r}; choose one of onnx, tflite")
        if impl not in (None, IMPL):
            raise ExportError(f"unknown SR front-end implementation {impl!r}; the only one is {IMPL!r}")
        return IMPL

    def export(self, data: Any, fmt: str, path: Any, norm: Any = None, impl: str | None = None) -> Path:
        self.resolve_impl(data, fmt, impl)
        if norm is not None:
            raise ExportError("the SR front end takes no standardisation (the model eats pixel values)")
        return (export_sr_frontend_onnx if fmt == "onnx" else export_sr_frontend_tflite)(data, path)

    def run(self, path: Any, raw: np.ndarray) -> np.ndarray:
        from edgenas.export.frontend import run_each

        path = Path(path)
        if not path.is_file():
            raise ExportError(f"front-end model not found: {path}")
        x = np.asarray(raw)
        if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != np.uint8:
            raise ExportError(f"tiles must be uint8 [N, t, t, 3], got {x.dtype} {list(x.shape)}")
        return run_each(path, x, "tiles")

    def reference(self, raw: np.ndarray, data: Any) -> np.ndarray:
        """The training transform: uint8 [N, t, t, 3] → [N, C, t, t] (:mod:`edgenas.datasets.sisr`)."""
        from edgenas.datasets.sisr import rgb_to_y

        x = np.ascontiguousarray(np.asarray(raw).transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
        return (rgb_to_y(x) if data.colour == "y" else x).astype(np.float32)

    def sources(self) -> list[str]:
        from edgenas.datasets import sisr

        return [__file__, sisr.__file__]
