"""The time-series front end (resample, normalise of a TSConfig) as its own float model.

On a board the pipeline is::

    one case ──► fill missing, pad to `length` (infer.py, numpy) ──► front-end model (float)
             ──► int8 classifier

and the front end reproduces :func:`edgenas.tasks.timeseries.transform` (the training inputs):
the case, time-major ``series`` float32 [1, length, dims] → resampled to ``input_length`` by one
constant matrix product (``Rᵀ [L, length] @ x``, the triangle-antialiased matrix of
:func:`edgenas.datasets.ts_prep.resample_matrix`; left out at the native length) → for
``norm == "series"`` each dimension z-normalised over time (mean, then the population std
floored at ``STD_FLOOR``) → per-dimension ``(x - mean) / std`` when ``norm`` (the dataset
statistics) is given, as a multiply and an add. Output ``features`` [1, dims, L, 1] (ONNX,
NCHW) or [1, L, 1, dims] (TFLite, NHWC, what each classifier eats). The raw input is
time-major so that the TFLite front end needs no TRANSPOSE: the resample is a constant
left-hand matrix product (one BATCH_MATMUL; for one dimension a FULLY_CONNECTED, on LiteRT 7.7× faster
for 1460 → 365 steps: 0.039 vs 0.301 ms p10) and the rest is elementwise or a mean over time (one implementation,
``"matmul"``).

Filling missing values and padding a variable-length case happen before the model (they change
the number of values, which a fixed-shape model cannot): ``infer.py`` does them in numpy exactly
as :func:`edgenas.datasets.ts_prep.fixed_length` (a test checks the two agree).
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

SERIES_NAME = "series"
FEATURES_NAME = "features"
FRONTEND_KIND = "ts-resample"
IMPL = "matmul"

Norm = tuple[np.ndarray, np.ndarray] | None


def _constants(cfg: Any, norm: Norm) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """(Rᵀ [L, length] or None at the native length, scale [dims], shift [dims])."""
    from edgenas.datasets.ts_prep import resample_matrix

    rt = None if cfg.input_length == cfg.length else np.ascontiguousarray(resample_matrix(cfg.length, cfg.input_length).T)
    d = cfg.dims
    if norm is None:
        return rt, np.ones(d, np.float32), np.zeros(d, np.float32)
    mean, std = (np.asarray(v, np.float32).reshape(-1) for v in norm)
    if mean.size not in (1, d) or std.size not in (1, d):
        raise ExportError(f"time-series front end: norm has {mean.size} means for {d} dimension(s)")
    return (rt, np.broadcast_to(1.0 / std, (d,)).astype(np.float32),
            np.broadcast_to(-mean / std, (d,)).astype(np.float32))


def frontend_metadata(cfg: Any, layout: str, norm: Norm = None) -> dict[str, str]:
    return model_metadata(
        None, QUANT_FP32, artifact="frontend", frontend=FRONTEND_KIND, frontend_impl=IMPL,
        data_config=json.dumps(cfg.to_dict(), sort_keys=True), data_key=cfg.key(),
        input=f"{SERIES_NAME} float32 [1, {cfg.length}, {cfg.dims}] time-major, no missing values",
        output_layout=layout,
        normalization=json.dumps(None if norm is None else {"mean": [float(v) for v in np.ravel(norm[0])],
                                                            "std": [float(v) for v in np.ravel(norm[1])]}))


def export_ts_frontend_onnx(cfg: Any, path: str | Path, norm: Norm = None) -> Path:
    """Float ONNX front end: ``series`` [1, length, dims] → ``features`` [1, dims, L, 1]."""
    from onnx import TensorProto, helper, numpy_helper

    from edgenas.datasets.ts_prep import STD_FLOOR
    from edgenas.export.onnx_export import _atomic_save, _set_metadata, check_model

    rt, scale, shift = _constants(cfg, norm)
    d, n = cfg.dims, cfg.input_length
    inits = [numpy_helper.from_array(scale.reshape(1, 1, d), "scale"),
             numpy_helper.from_array(shift.reshape(1, 1, d), "shift"),
             numpy_helper.from_array(np.array([1, d, n, 1], np.int64), "out_shape"),
             numpy_helper.from_array(np.array([1], np.int64), "time_axis"),
             numpy_helper.from_array(np.array(STD_FLOOR, np.float32), "floor")]
    nodes, x = [], SERIES_NAME
    if rt is not None:
        inits.append(numpy_helper.from_array(rt, "rt"))
        nodes.append(helper.make_node("MatMul", ["rt", x], ["res"]))  # [1, L, dims]
        x = "res"
    if cfg.norm == "series":
        nodes += [helper.make_node("ReduceMean", [x, "time_axis"], ["mean"], keepdims=1),
                  helper.make_node("Sub", [x, "mean"], ["centred"]),
                  helper.make_node("Mul", ["centred", "centred"], ["sq"]),
                  helper.make_node("ReduceMean", ["sq", "time_axis"], ["var"], keepdims=1),
                  helper.make_node("Sqrt", ["var"], ["sd"]),
                  helper.make_node("Max", ["sd", "floor"], ["sdf"]),
                  helper.make_node("Div", ["centred", "sdf"], ["z"])]
        x = "z"
    nodes += [helper.make_node("Mul", [x, "scale"], ["scaled"]),
              helper.make_node("Add", ["scaled", "shift"], ["std"]),
              helper.make_node("Transpose", ["std"], ["chw"], perm=[0, 2, 1]),  # [1, dims, L]
              helper.make_node("Reshape", ["chw", "out_shape"], [FEATURES_NAME])]
    graph = helper.make_graph(nodes, "edgenas_ts_frontend",
                              [helper.make_tensor_value_info(SERIES_NAME, TensorProto.FLOAT, [1, cfg.length, d])],
                              [helper.make_tensor_value_info(FEATURES_NAME, TensorProto.FLOAT, [1, d, n, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgenas")
    model.ir_version = min(model.ir_version, 10)
    _set_metadata(model, frontend_metadata(cfg, "NCHW", norm))
    path = Path(path)
    check_model(model, f"time-series front end {path}")
    _atomic_save(model, path)
    return path


def export_ts_frontend_tflite(cfg: Any, path: str | Path, norm: Norm = None) -> Path:
    """Float TFLite front end: ``series`` [1, length, dims] → [1, L, 1, dims] (NHWC), builtins only."""
    from edgenas.datasets.ts_prep import STD_FLOOR
    from edgenas.export.frontend import _import_tf, convert_builtins

    tf = _import_tf()
    rt, scale, shift = _constants(cfg, norm)
    d, n = cfg.dims, cfg.input_length
    path = Path(path)

    @tf.function(input_signature=[tf.TensorSpec([1, cfg.length, d], tf.float32, name=SERIES_NAME)])
    def frontend(series: Any) -> Any:
        x = series
        if rt is not None and d == 1:  # a FULLY_CONNECTED on [1, length]: 7.7× faster than the
            x = tf.reshape(tf.matmul(tf.reshape(x, [1, cfg.length]), tf.constant(rt.T)), [1, n, 1])  # BATCH_MATMUL
        elif rt is not None:  # a constant left operand: one BATCH_MATMUL (tf.matmul on [length, dims]
            x = tf.raw_ops.BatchMatMulV2(x=tf.constant(rt[None]), y=x)  # became TRANSPOSE, FC, TRANSPOSE)
        if cfg.norm == "series":
            x = x - tf.reduce_mean(x, axis=1, keepdims=True)
            x = x / tf.maximum(tf.sqrt(tf.reduce_mean(x * x, axis=1, keepdims=True)), STD_FLOOR)
        if norm is not None:
            x = x * tf.constant(scale) + tf.constant(shift)
        return {FEATURES_NAME: tf.reshape(x, [1, n, 1, d])}

    flat = embed_metadata(convert_builtins(frontend, "time-series front-end", path), frontend_metadata(cfg, "NHWC", norm))
    atomic_write_bytes(path, flat)
    return path


def run_ts_frontend(path: str | Path, raw: np.ndarray) -> np.ndarray:
    """Model inputs [N, dims, L, 1] float32 of raw cases [N, length, dims] through a front-end file
    of either format (the TFLite NHWC output is transposed to NCHW)."""
    from edgenas.export.frontend import run_each

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"front-end model not found: {path}")
    x = np.asarray(raw, dtype=np.float32)
    if x.ndim != 3:
        raise ExportError(f"cases must be float32 [N, length, dims], got {list(x.shape)}")
    return run_each(path, x, "cases")


class TSFrontEnd(FrontEnd):
    """The time-series task's front end (:class:`edgenas.tasks.FrontEnd`): one implementation."""

    kind = FRONTEND_KIND
    raw_input = "series"

    def raw_shape(self, data: Any) -> tuple[int, ...]:
        return (1, data.length, data.dims)

    def describe(self, data: Any) -> str:
        norm = {"series": ", z-normalised per series", "dataset": ", standardised", "none": ""}[data.norm]
        res = "" if data.input_length == data.length else f" resampled to {data.input_length}"
        return f"one case of {data.dims} × {data.length} values (time-major){res}{norm}"

    def resolve_impl(self, data: Any, fmt: str, impl: str | None = None) -> str:
        if fmt not in ("onnx", "tflite"):
            raise ExportError(f"unknown front-end format {fmt!r}; choose one of onnx, tflite")
        if impl not in (None, IMPL):
            raise ExportError(f"unknown time-series front-end implementation {impl!r}; the only one is {IMPL!r}")
        return IMPL

    def export(self, data: Any, fmt: str, path: Any, norm: Any = None, impl: str | None = None) -> Path:
        self.resolve_impl(data, fmt, impl)
        return (export_ts_frontend_onnx if fmt == "onnx" else export_ts_frontend_tflite)(data, path, norm)

    def run(self, path: Any, raw: np.ndarray) -> np.ndarray:
        return run_ts_frontend(path, raw)

    def reference(self, raw: np.ndarray, data: Any) -> np.ndarray:
        from edgenas.datasets.ts_prep import transform

        return transform(raw, data)

    def sources(self) -> list[str]:
        from edgenas.datasets import ts_prep

        return [__file__, ts_prep.__file__]
