"""TFLite export (fp32 and full-integer int8), running and verification.

The route (DESIGN.md, "Toolchain"): the PyTorch network is rebuilt as a channels-last Keras model
with the trained weights (:func:`edgenas.export.keras_build.to_keras`: BatchNorm folded, weight
layouts converted, PixelShuffle → DEPTH_TO_SPACE), and ``tf.lite.TFLiteConverter`` converts it:

* ``quant="fp32"`` — a plain float model.
* ``quant="int8"`` — full-integer post-training quantization: ``Optimize.DEFAULT`` with a
  representative dataset (at most :data:`MAX_CALIBRATION` samples of ``calibration``, given in
  torch layout and transposed to channels-last here), ``TFLITE_BUILTINS_INT8`` only, int8 input
  and int8 output. Weights are int8 (per-channel for convolutions), biases int32, activations
  int8; the model has no float tensor and no QUANTIZE/DEQUANTIZE at its edges — the caller
  quantizes the input with the input tensor's scale/zero point (:func:`run_tflite` does).

Conversion is in memory: the Keras model is traced once into a ``tf.function`` concrete function
and frozen by the converter (``experimental_lower_to_saved_model = False``), so no SavedModel is
written. :func:`tflite_int8_random` is the fast path for latency calibration (random
representative data, numerics meaningless, timing representative).

Metadata is embedded in the model file as a TFLite *metadata buffer* named ``"edgenas"`` (the
flatbuffer's ``Model.metadata`` list; runtimes ignore unknown entries) holding a JSON object of
strings; :func:`read_tflite_metadata` reads it back. The export's own facts (``format``,
``quant_scheme``, ``input_layout``, ``input_shape``, ``torch_input_shape``,
``calibration_samples``) override same-named keys the caller passes, so they cannot lie.
Embedding re-packs the flatbuffer with every buffer 16-byte aligned, as the converter writes it.

Files are written atomically (temporary file in the same folder, then ``os.replace``). TensorFlow
and LiteRT log spam (C++ logs, "fully_quantize: …", the XNNPACK banner, Python warnings) is
silenced (:func:`~edgenas.export.keras_build.quiet_native`), so the CLI stays clean.

:func:`verify_tflite` reads the flatbuffer (the schema bindings shipped with ``ai_edge_litert``;
no TensorFlow needed) and reports the op list, TRANSPOSE count, integer-only-ness, TFLite Micro
compatibility (:mod:`edgenas.export.tflm_ops`), peak activation memory and flash size.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from torch import nn

from edgenas.errors import ExportError
from edgenas.fileio import atomic_write_bytes
from edgenas.export.keras_build import (
    TFLITE_EXTRA,
    channels_last_perm,
    import_tf,
    keras_input_shape,
    quiet_native,
    to_channels_first,
    to_channels_last,
    to_keras,
)
from edgenas.export.tflm_ops import TFLM_SOURCE, tflm_supports

QUANT_FP32 = "fp32"
QUANT_TFLITE_INT8 = "tflite-int8-full-integer"
QUANTS = ("fp32", "int8")
MAX_CALIBRATION = 300
METADATA_NAME = "edgenas"
_LAYOUTS = {2: "NC", 3: "NLC", 4: "NHWC"}
_DTYPE_BYTES = {"FLOAT32": 4, "FLOAT16": 2, "INT32": 4, "UINT8": 1, "INT64": 8, "BOOL": 1, "INT16": 2,
                "COMPLEX64": 8, "INT8": 1, "FLOAT64": 8, "COMPLEX128": 16, "UINT64": 8, "UINT32": 4,
                "UINT16": 2, "BFLOAT16": 2}
_FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16", "COMPLEX64", "COMPLEX128"}


# ---- conversion -----------------------------------------------------------------------------------

def _convert(keras_model: Any, quant: str, samples: np.ndarray | None) -> bytes:
    """TFLite flatbuffer bytes of ``keras_model``; ``samples`` are channels-last, one per row."""
    tf, _ = import_tf()
    shape = tuple(int(s) for s in keras_model.inputs[0].shape)
    with quiet_native() as captured:
        try:
            fn = tf.function(lambda input: keras_model(input, training=False))
            concrete = fn.get_concrete_function(tf.TensorSpec(shape, tf.float32))
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], keras_model)
            converter.experimental_lower_to_saved_model = False  # freeze in memory, no SavedModel
            if quant == "int8":
                assert samples is not None

                def representative() -> Iterator[list[np.ndarray]]:
                    for s in samples:
                        yield [s[None].astype(np.float32)]

                converter.optimizations = [tf.lite.Optimize.DEFAULT]
                converter.representative_dataset = representative
                converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
            data = converter.convert()
        except Exception as e:  # noqa: BLE001 - the converter raises many kinds
            err: Exception | None = e
        else:
            err = None
    if err is not None:
        lines = [ln for ln in (str(err).strip().splitlines() + "".join(captured).splitlines()) if ln.strip()]
        why = lines[0] if lines else type(err).__name__
        raise ExportError(f"TFLite conversion ({quant}) failed: {why.strip()[:300]}")
    return bytes(data)


def _calibration_subset(calibration: np.ndarray, input_shape: Sequence[int], limit: int) -> np.ndarray:
    x = np.asarray(calibration, dtype=np.float32)
    want = tuple(int(s) for s in input_shape[1:])
    if x.ndim != len(input_shape) or tuple(x.shape[1:]) != want:
        raise ExportError(f"calibration samples have shape {list(x.shape)}, expected [n, {', '.join(map(str, want))}] "
                          "(torch layout)")
    if len(x) == 0:
        raise ExportError("int8 TFLite export needs at least one calibration sample")
    if len(x) > limit:
        idx = np.sort(np.random.default_rng(0).choice(len(x), limit, replace=False))
        x = x[idx]
    return to_channels_last(x)


def export_tflite(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, *, quant: str = "int8",
                  calibration: np.ndarray | None = None, metadata: dict[str, str] | None = None,
                  max_calibration: int = MAX_CALIBRATION) -> Path:
    """Export ``model`` (eval semantics) to a TFLite file at ``path``; returns the path.

    ``input_shape`` is the torch input shape (batch set to 1). ``quant="int8"`` needs
    ``calibration`` samples in torch layout ([n, *input_shape[1:]]); at most ``max_calibration``
    of them (a seeded random subset) feed the representative dataset.
    """
    if quant not in QUANTS:
        raise ExportError(f"unknown TFLite quantization {quant!r}; choose one of {', '.join(QUANTS)}")
    samples = None
    if quant == "int8":
        if calibration is None:
            raise ExportError("int8 TFLite export needs calibration samples (representative data)")
        samples = _calibration_subset(calibration, input_shape, max_calibration)
    keras_model = to_keras(model, input_shape)
    data = _convert(keras_model, quant, samples)
    md = {**(metadata or {}), **_own_metadata(input_shape, quant, 0 if samples is None else len(samples))}
    data = embed_metadata(data, md)
    return atomic_write_bytes(path, data)


def tflite_int8_random(model: nn.Module, input_shape: tuple[int, ...], path: str | Path, *, samples: int = 8,
                       seed: int = 0, metadata: dict[str, str] | None = None) -> Path:
    """Fast full-int8 export for latency measurement: calibrated on ``samples`` standard-normal inputs.

    The model runs the same integer kernels as a properly calibrated one, but its outputs are
    meaningless: use it for timing and memory only.
    """
    shape = keras_input_shape(input_shape)
    x = np.random.default_rng(seed).standard_normal((samples, *shape[1:])).astype(np.float32)
    keras_model = to_keras(model, input_shape)
    data = _convert(keras_model, "int8", x)
    md = {**(metadata or {}), **_own_metadata(input_shape, "int8", samples), "calibration": "random-normal"}
    data = embed_metadata(data, md)
    return atomic_write_bytes(path, data)


def _own_metadata(input_shape: Sequence[int], quant: str, n_calib: int) -> dict[str, str]:
    shape = keras_input_shape(input_shape)
    return {
        "format": "tflite",
        "quant_scheme": QUANT_TFLITE_INT8 if quant == "int8" else QUANT_FP32,
        "input_layout": _LAYOUTS.get(len(shape), "channels-last"),
        "input_shape": json.dumps(list(shape)),
        "torch_input_shape": json.dumps([1, *[int(s) for s in input_shape[1:]]]),
        "calibration_samples": str(n_calib),
    }


# ---- flatbuffer access -------------------------------------------------------------------------

def _schema() -> Any:
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tensorflow.lite.python import schema_py_generated as schema  # type: ignore[no-redef]
        except ImportError:
            raise ExportError(f"reading TFLite models needs ai-edge-litert; {TFLITE_EXTRA}") from None
    return schema


def _load_model(data: bytes) -> Any:
    schema = _schema()
    try:
        if data[4:8] != b"TFL3":
            raise ValueError("no TFL3 identifier")
        return schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"not a TFLite model ({e})") from None


def _read_bytes(path: str | Path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"TFLite model {p} does not exist")
    return p.read_bytes()


def _str(x: Any) -> str:
    return x.decode("utf-8", "replace") if isinstance(x, (bytes, bytearray)) else str(x or "")


def embed_metadata(data: bytes, metadata: dict[str, str]) -> bytes:
    """``data`` (a TFLite flatbuffer) with ``metadata`` as JSON in the metadata buffer ``"edgenas"``."""
    import flatbuffers

    schema = _schema()
    model = _load_model(data)
    payload = json.dumps({str(k): str(v) for k, v in metadata.items()}, sort_keys=True).encode()
    entries = [m for m in (model.metadata or []) if _str(m.name) != METADATA_NAME]
    model.buffers.append(schema.BufferT(data=np.frombuffer(payload, dtype=np.uint8)))
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata = entries + [entry]

    class AlignedBuffer(schema.BufferT):  # type: ignore[misc, name-defined]
        """Packs its data 16-byte aligned, as the TFLite converter does."""

        def Pack(self, builder: Any) -> int:  # noqa: N802 - flatbuffers API
            off = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), 16)
                builder.head = builder.head - len(raw)
                builder.Bytes[builder.head:builder.head + len(raw)] = raw
                builder.vectorNumElems = len(raw)
                off = builder.EndVector()
            schema.BufferStart(builder)
            if off is not None:
                schema.BufferAddData(builder, off)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return int(schema.BufferEnd(builder))

    if any(getattr(b, "offset", 0) for b in model.buffers):
        raise ExportError("cannot embed metadata in a TFLite model with external (offset) buffers")
    for b in model.buffers:
        b.__class__ = AlignedBuffer
    builder = flatbuffers.Builder(len(data) + len(payload) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def read_tflite_metadata(path: str | Path) -> dict[str, str]:
    """The edgenas metadata embedded by :func:`export_tflite` ({} when there is none)."""
    model = _load_model(_read_bytes(path))
    for m in model.metadata or []:
        if _str(m.name) == METADATA_NAME:
            buf = model.buffers[m.buffer].data
            if buf is None:
                return {}
            return {str(k): str(v) for k, v in json.loads(np.asarray(buf, dtype=np.uint8).tobytes()).items()}
    return {}


# ---- running ------------------------------------------------------------------------------------

def _interpreter(path: str | Path, num_threads: int = 1) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ExportError(f"running TFLite models needs ai-edge-litert; {TFLITE_EXTRA}") from None
    p = Path(path)
    if not p.is_file():
        raise ExportError(f"TFLite model {p} does not exist")
    with quiet_native():
        try:
            interp = Interpreter(model_path=str(p), num_threads=num_threads)
            interp.allocate_tensors()
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"LiteRT cannot load {p.name}: {str(e).strip().splitlines()[0] if str(e).strip() else e}") from None
    return interp


def run_tflite(path: str | Path, x_torch_layout: np.ndarray, *, num_threads: int = 1) -> np.ndarray:
    """Float outputs of the TFLite model for a batch in torch layout, returned in torch layout.

    Each sample runs alone (the model has batch 1). For int8 inputs the sample is quantized with the
    input tensor's scale and zero point; int8 outputs are dequantized with the output's. Outputs
    of rank ≥ 3 come back channels-first (NHWC → NCHW, NLC → NCL).
    """
    interp = _interpreter(path, num_threads)
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    x = np.asarray(x_torch_layout, dtype=np.float32)
    want = tuple(int(s) for s in inp["shape"])
    if x.ndim != len(want) or tuple(to_channels_last(x[:1]).shape[1:]) != want[1:]:
        raise ExportError(f"input of shape {list(x.shape)} does not fit the TFLite input {list(want)} "
                          f"(channels-last of torch [n, ...])")
    in_scale, in_zp = inp["quantization"]
    out_scale, out_zp = out["quantization"]
    results = []
    with quiet_native():
        for i in range(len(x)):
            xi = to_channels_last(x[i:i + 1])
            if inp["dtype"] == np.int8:
                xi = np.clip(np.round(xi / in_scale + in_zp), -128, 127).astype(np.int8)
            elif inp["dtype"] != np.float32:
                raise ExportError(f"unsupported TFLite input dtype {np.dtype(inp['dtype']).name}")
            interp.set_tensor(inp["index"], xi)
            interp.invoke()
            y = interp.get_tensor(out["index"])
            if out["dtype"] == np.int8:
                y = (y.astype(np.float32) - out_zp) * out_scale
            results.append(np.asarray(y, dtype=np.float32).copy())
    y_all = np.concatenate(results, axis=0)
    return to_channels_first(y_all) if y_all.ndim >= 3 else y_all


# ---- verification -------------------------------------------------------------------------------

def _enum_names(cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def _tensor_bytes(shape: Sequence[int], dtype: str) -> int:
    n = int(np.prod([max(int(s), 1) for s in shape])) if len(shape) else 1
    return n * _DTYPE_BYTES.get(dtype, 4)


def verify_tflite(path: str | Path, *, allowed_float_tensors: Sequence[str] = ()) -> dict[str, Any]:
    """A JSON-ready report on a TFLite model.

    Keys: ``ops`` (builtin op names in execution order), ``op_counts``, ``transpose_ops``,
    ``inputs``/``outputs`` (name, shape, dtype, scale, zero point), ``fully_int8`` with
    ``non_integer_tensors`` (every tensor must be int8 or int32 unless named in
    ``allowed_float_tensors``) and ``float_ops`` (ops reading or writing such a tensor, e.g. a
    DEQUANTIZE), ``int8_io``, ``tflm_compatible`` and ``tflm`` ("TFLM-compatible: yes/no,
    because …") with ``tflm_notes`` (caveats such as grouped convolutions),
    ``peak_activation_bytes`` and ``peak_op`` (tensors live over the execution order of the main
    subgraph, non-constant tensor bytes summed per op, maximum over ops; no scratch buffers, no
    in-place reuse, a RESHAPE output counts as a new tensor), ``weight_bytes`` (constant buffers),
    ``flash_bytes`` (file size) and ``metadata`` (the embedded edgenas metadata).
    """
    p = Path(path)
    data = _read_bytes(p)
    schema = _schema()
    model = _load_model(data)
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    allowed = set(allowed_float_tensors)
    if not model.subgraphs:
        raise ExportError(f"{p.name} has no subgraph")
    md_buffers = {m.buffer for m in (model.metadata or [])}

    def opname(code_index: int) -> str:
        oc = model.operatorCodes[code_index]
        code = max(int(oc.builtinCode or 0), int(oc.deprecatedBuiltinCode or 0))
        name = op_names.get(code, f"BUILTIN_{code}")
        return _str(oc.customCode) if name == "CUSTOM" else name

    def is_const(t: Any) -> bool:
        b = model.buffers[t.buffer] if 0 < t.buffer < len(model.buffers) else None
        return b is not None and b.data is not None and len(b.data) > 0

    sg = model.subgraphs[0]
    tensors = sg.tensors or []
    names = [_str(t.name) for t in tensors]
    dtypes = [type_names.get(int(t.type), str(t.type)) for t in tensors]
    shapes = [[int(s) for s in (t.shape if t.shape is not None else [])] for t in tensors]
    ops_all: list[str] = []
    dynamic: list[str] = []
    for g in model.subgraphs:
        for op in g.operators or []:
            ops_all.append(opname(op.opcodeIndex))
        for t in g.tensors or []:
            sig = t.shapeSignature
            if sig is not None and any(int(s) < 0 for s in sig):
                dynamic.append(_str(t.name))
    ops = [opname(op.opcodeIndex) for op in (sg.operators or [])]

    def io(indices: Any) -> list[dict[str, Any]]:
        out = []
        for i in (indices if indices is not None else []):
            t = tensors[int(i)]
            q = t.quantization
            scale = [float(s) for s in q.scale] if q is not None and q.scale is not None else []
            zp = [int(z) for z in q.zeroPoint] if q is not None and q.zeroPoint is not None else []
            out.append({"name": names[int(i)], "shape": shapes[int(i)], "dtype": dtypes[int(i)].lower(),
                        "scale": scale[0] if len(scale) == 1 else scale,
                        "zero_point": zp[0] if len(zp) == 1 else zp})
        return out

    inputs, outputs = io(sg.inputs), io(sg.outputs)

    # integer-only check
    bad = [{"name": names[i], "dtype": dtypes[i].lower()} for i in range(len(tensors))
           if dtypes[i] not in ("INT8", "INT32") and names[i] not in allowed]
    bad_names = {b["name"] for b in bad}
    float_ops = []
    for k, op in enumerate(sg.operators or []):
        idx = [int(i) for i in list(op.inputs if op.inputs is not None else []) +
               list(op.outputs if op.outputs is not None else []) if int(i) >= 0]
        if ops[k] == "DEQUANTIZE" or any(dtypes[i] in _FLOAT_TYPES and names[i] in bad_names for i in idx):
            float_ops.append(f"{ops[k]}#{k}")
    int8_io = all(t["dtype"] == "int8" for t in inputs + outputs)
    fully_int8 = not bad and not float_ops and int8_io

    # TFLite Micro
    missing = sorted({o for o in ops_all if not tflm_supports(o)})
    if missing:
        tflm = f"TFLM-compatible: no, because {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not " \
               f"in TFLite Micro's op resolver ({TFLM_SOURCE})"
    elif dynamic:
        tflm = f"TFLM-compatible: no, because tensor {dynamic[0]} has a dynamic shape (TFLM plans static memory)"
    else:
        kinds = sorted(set(ops_all))
        tflm = f"TFLM-compatible: yes, because all {len(kinds)} op types ({', '.join(kinds)}) are TFLite Micro " \
               f"builtins and all shapes are static"

    # a grouped CONV_2D (filter depth < input depth) runs in LiteRT; TFLM kernels of the snapshot
    # in tflm_ops.py assume filter depth == input depth, so say so rather than guess
    notes = []
    for k, op in enumerate(sg.operators or []):
        if ops[k] == "CONV_2D" and op.inputs is not None and len(op.inputs) >= 2:
            x_shape, w_shape = shapes[int(op.inputs[0])], shapes[int(op.inputs[1])]
            if len(x_shape) == 4 and len(w_shape) == 4 and w_shape[3] != x_shape[3]:
                notes.append(f"CONV_2D#{k} is a grouped convolution (filter depth {w_shape[3]} < input depth "
                             f"{x_shape[3]}): it needs a TFLM release with grouped-convolution support")

    # peak activation memory over the execution order of the main subgraph
    n_ops = len(sg.operators or [])
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i in (sg.inputs if sg.inputs is not None else []):
        first[int(i)] = 0
        last[int(i)] = 0
    for k, op in enumerate(sg.operators or []):
        for i in (op.inputs if op.inputs is not None else []):
            i = int(i)
            if i >= 0 and not is_const(tensors[i]):
                first.setdefault(i, k)
                last[i] = max(last.get(i, k), k)
        for i in (op.outputs if op.outputs is not None else []):
            i = int(i)
            first.setdefault(i, k)
            last[i] = max(last.get(i, k), k)
    for i in (sg.outputs if sg.outputs is not None else []):
        last[int(i)] = max(n_ops - 1, 0)
        first.setdefault(int(i), 0)
    sizes = {i: _tensor_bytes(shapes[i], dtypes[i]) for i in first}
    peak, peak_at = 0, 0
    for k in range(max(n_ops, 1)):
        live = sum(sizes[i] for i in first if first[i] <= k <= last[i])
        if live > peak:
            peak, peak_at = live, k
    weight_bytes = sum(len(b.data) for j, b in enumerate(model.buffers)
                       if b.data is not None and j not in md_buffers)

    metadata: dict[str, str] = {}
    for m in model.metadata or []:
        if _str(m.name) == METADATA_NAME and model.buffers[m.buffer].data is not None:
            raw = np.asarray(model.buffers[m.buffer].data, dtype=np.uint8).tobytes()
            metadata = {str(k): str(v) for k, v in json.loads(raw).items()}

    return {
        "path": str(p),
        "flash_bytes": len(data),
        "weight_bytes": int(weight_bytes),
        "subgraphs": len(model.subgraphs),
        "ops": ops,
        "op_counts": dict(Counter(ops_all)),
        "transpose_ops": sum(1 for o in ops_all if o == "TRANSPOSE"),
        "inputs": inputs,
        "outputs": outputs,
        "int8_io": int8_io,
        "fully_int8": fully_int8,
        "non_integer_tensors": bad,
        "float_ops": float_ops,
        "tflm_compatible": not missing and not dynamic,
        "tflm": tflm,
        "tflm_notes": notes,
        "peak_activation_bytes": int(peak),
        "peak_op": f"{ops[peak_at]}#{peak_at}" if ops else "",
        "metadata": metadata,
    }


__all__ = [
    "MAX_CALIBRATION", "METADATA_NAME", "QUANT_FP32", "QUANT_TFLITE_INT8", "channels_last_perm", "embed_metadata",
    "export_tflite", "read_tflite_metadata", "run_tflite", "tflite_int8_random", "verify_tflite",
]
