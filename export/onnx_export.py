"""ONNX export: fp32 through the dynamo exporter, int8 by static QDQ quantization, and checks.

* :func:`export_onnx_fp32` — ``torch.onnx.export(dynamo=True)`` at opset 18 with a dynamic batch
  dimension (input ``input`` [batch, …], output ``logits``), metadata written into
  ``metadata_props``, verified by ``onnx.checker``, written atomically.
* :func:`quantize_int8` — ``onnxruntime.quantization.quantize_static`` in QDQ format with
  per-channel int8 weights and uint8 (asymmetric) activations, MinMax calibration on at most
  ``max_calibration`` samples. A final Gemm (the classifier) is not requantized: ONNX Runtime
  fuses it into a QGemm with float output (the int32 accumulator times its scale).

  Weights are 8-bit unless this host's ONNX Runtime kernels do not compute what the QDQ graph
  says: the quantized file is run fused (integer kernels) and unfused (DequantizeLinear → float op
  → QuantizeLinear, the graph's own arithmetic) on calibration inputs (:func:`kernel_drift`); if
  they disagree, the file is quantized again with 7-bit weights (``reduce_range``). That happens on
  x86 CPUs without VNNI, where the u8·s8 kernels sum pairs of products in 16 bits
  (``vpmaddubsw``) and saturate with full 8-bit weights (ONNX Runtime issue #5849; a DS-CNN gave
  0% argmax agreement). ARM boards and VNNI CPUs keep 8-bit weights. ``weight_bits`` and the
  reason are in the file's metadata and the export report.

  Why QUInt8 activations (U8S8) and not QInt8 (S8S8), ONNX Runtime's documented default: ORT
  1.32 on x86 fuses an S8S8 QDQ Conv into QLinearConv only in plain chains; the Conv feeding a
  residual Add and the Add itself stay float kernels between DequantizeLinear and QuantizeLinear.
  With U8S8 every Conv and Add fuses (QLinearConv, QLinearAdd). Measured side by side on the same
  fp32 files (``bench/onnx_activations.py``): residual TCNs 4.8-6.9x faster, image cells
  1.3-1.6x, a plain DS-CNN level, with the same outputs (max abs difference <= 0.004, argmax
  equal). The 16-bit saturation of U8S8 kernels on x86 without VNNI is what :func:`kernel_drift`
  checks (7-bit weights where the fused and unfused files disagree). TFLite still quantizes to
  int8 activations; an ONNX file's activation type is in its metadata (``activations``).
* :func:`run_onnx`, :func:`evaluate_onnx`, :func:`check_parity`.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np

import edgenas
from edgenas.errors import ExportError
from edgenas.fileio import atomic_write_bytes

OPSET = 18
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
QUANT_FP32 = "fp32"
QUANT_INT8 = "int8-qdq-per-channel"
ACTIVATIONS = "u8"  # the activations' integer type in the int8 QDQ file (module docstring)


def model_metadata(spec: Any = None, quant_scheme: str = QUANT_FP32, **extra: str) -> dict[str, str]:
    """The metadata every artifact carries. ``spec`` is an ArchSpec (or None)."""
    md: dict[str, str] = {"edgenas_version": edgenas.__version__, "quant_scheme": quant_scheme}
    if spec is not None:
        md["arch_hash"] = spec.hash()
        md["arch_spec"] = spec.to_json(indent=None)
        md["data_config"] = json.dumps(spec.data.to_dict(), sort_keys=True)
    md.update({k: str(v) for k, v in extra.items()})
    return md


def read_metadata(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Silence the exporter's prints, warnings and log records; the captured text is yielded."""
    buf = io.StringIO()
    prefixes = ("torch", "onnx", "onnxscript", "onnx_ir", "onnxruntime")
    names = [n for n in logging.root.manager.loggerDict if n.split(".")[0] in prefixes]
    loggers = [logging.getLogger(n) for n in sorted(set(names) | set(prefixes))]
    loggers.append(logging.getLogger())  # the quantizer warns through the root logger
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # the quantizer's own sessions warn in C++ (e.g. unused initializers)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield buf
    finally:
        ort.set_default_logger_severity(2)  # onnxruntime's default (warnings)
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


def _atomic_save(model: Any, path: Path) -> None:
    import onnx

    atomic_write_bytes(path, onnx.serialize_model(model) if hasattr(onnx, "serialize_model")
                       else model.SerializeToString())


def check_model(model: Any, what: str) -> None:
    """``onnx.checker`` (full check) on ``model``; a failure is a one-line ExportError naming ``what``."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as e:
        raise ExportError(f"{what} fails onnx.checker: {_first_line(e)}") from None


def _set_metadata(model: Any, metadata: dict[str, str]) -> None:
    existing = {p.key: p for p in model.metadata_props}
    for k, v in metadata.items():
        if k in existing:
            existing[k].value = str(v)
        else:
            p = model.metadata_props.add()
            p.key, p.value = str(k), str(v)


def _strip_debug_info(model: Any) -> None:
    """Drop the exporter's per-node debug records (FX node text, stack namespaces, doc strings).

    They are most of a small model's file size (≈15 KB for a 6 KB DS-CNN) and would make the
    artifact's flash size lie."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        del vi.metadata_props[:]
        vi.doc_string = ""
    for init in model.graph.initializer:
        del init.metadata_props[:]
    model.graph.doc_string = ""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def export_onnx_fp32(model: Any, input_shape: tuple[int, ...], path: str | Path,
                     metadata: dict[str, str] | None = None, dynamic_batch: bool = True,
                     input_name: str = INPUT_NAME, output_name: str = OUTPUT_NAME) -> Path:
    """Export ``model`` (eval mode) for inputs ``[batch, *input_shape[1:]]``; returns ``path``.

    ``input_shape`` includes the batch dimension (e.g. ``(1, 1, 49, 10)``). With
    ``dynamic_batch`` the batch dimension is symbolic; without it the model has the static shape
    ``input_shape`` — what a device runs (batch 1), and what TFLite-style runtimes need.
    """
    import onnx
    import torch

    path = Path(path)
    md = {"edgenas_version": edgenas.__version__, **(metadata or {}), "quant_scheme": QUANT_FP32}
    was_training = model.training
    model.eval()
    batch = max(2, input_shape[0]) if dynamic_batch else input_shape[0]
    example = torch.randn(*((batch,) + tuple(input_shape[1:])))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=str(path.parent)) as td:
        raw = Path(td) / "raw.onnx"
        try:
            with _quiet(), torch.no_grad():
                program = torch.onnx.export(
                    model, (example,), dynamo=True, opset_version=OPSET,
                    input_names=[input_name], output_names=[output_name],
                    dynamic_shapes=({0: torch.export.Dim("batch")},) if dynamic_batch else None, verbose=False,
                )
                program.save(str(raw))
        except Exception as e:
            raise ExportError(f"ONNX export to {path} failed: {_first_line(e)}") from None
        finally:
            model.train(was_training)
        proto = onnx.load(str(raw))
    _strip_debug_info(proto)
    _set_metadata(proto, md)
    check_model(proto, f"exported model {path}")
    _atomic_save(proto, path)
    return path


class _ArrayReader:
    """CalibrationDataReader over an array [N, …], in batches (batch 1 for a static-batch model)."""

    def __init__(self, name: str, data: np.ndarray, batch: int) -> None:
        self.name = name
        self.data = data
        self.batch = batch
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.data):
            return None
        chunk = self.data[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self) -> None:
        self.i = 0


def _batch_dim(path: str | Path) -> int | None:
    """The model input's static batch size, or None when it is symbolic."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else None


KERNEL_DRIFT_TOLERANCE = 0.02  # max |fused − unfused| output over max |unfused| output; rounding is ~1e-3


def kernel_drift(path: str | Path, x: np.ndarray) -> dict[str, float]:
    """How far ONNX Runtime's fused integer kernels stray from the QDQ graph's own arithmetic
    (the same file run unfused) on inputs ``x``: ``rel_max_abs`` (max |difference| over max
    |unfused output|) and argmax ``agreement``."""
    a, b = run_onnx(path, x), run_onnx(path, x, fused=False)
    scale = float(np.abs(b).max()) or 1.0
    return {"rel_max_abs": float(np.abs(a - b).max()) / scale,
            "agreement": float((a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).mean())}


def quantize_int8(fp32_path: str | Path, int8_path: str | Path, calibration: np.ndarray,
                  metadata: dict[str, str] | None = None, max_calibration: int = 300,
                  seed: int = 0, weight_bits: int | None = None, activations: str = ACTIVATIONS) -> Path:
    """Static int8 QDQ quantization (per-channel S8 weights, MinMax calibration; activations
    ``"u8"`` (the default, module docstring) or ``"s8"``, asymmetric either way, so the two
    differ by 128 in every zero point).

    ``weight_bits`` None: 8, or 7 when this host's kernels drift from the QDQ arithmetic with 8
    (module docstring); 8 or 7 forces it."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, int8_path = Path(fp32_path), Path(int8_path)
    if not fp32_path.is_file():
        raise ExportError(f"fp32 model not found: {fp32_path}")
    if activations not in ("s8", "u8"):
        raise ExportError(f"activations must be s8 or u8, got {activations!r}")
    if weight_bits not in (None, 7, 8):
        raise ExportError(f"weight_bits must be 7 or 8, got {weight_bits!r}")
    calib = np.asarray(calibration, dtype=np.float32)
    if calib.ndim < 2 or len(calib) == 0:
        raise ExportError(f"calibration data must be a non-empty array [N, …], got shape {calib.shape}")
    if len(calib) > max_calibration:
        idx = np.random.default_rng(seed).choice(len(calib), max_calibration, replace=False)
        calib = calib[np.sort(idx)]
    base_md = read_metadata(fp32_path)
    md = {**base_md, "edgenas_version": edgenas.__version__, **(metadata or {}), "quant_scheme": QUANT_INT8}
    static_batch = _batch_dim(fp32_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=str(int8_path.parent)) as td:
        pre = Path(td) / "pre.onnx"
        out = Path(td) / "int8.onnx"

        def quantize(bits: int) -> None:
            with _quiet():
                extra = {"ActivationSymmetric": False, "WeightSymmetric": True}
                if _output_op(pre) in FLOAT_OUTPUT_OPS:
                    # logits leave the final QGemm as its dequantized int32 accumulator, not
                    # requantized to int8: requantizing them tied the top two classes of 0.8% of
                    # FSDD test clips (one int8 step = 0.036 logit)
                    extra["OpTypesToExcludeOutputQuantization"] = sorted(FLOAT_OUTPUT_OPS)
                quantize_static(
                    str(pre), str(out), _ArrayReader(_input_name(fp32_path), calib, batch=static_batch or 32),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8 if activations == "s8" else QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, reduce_range=bits == 7,
                    calibrate_method=CalibrationMethod.MinMax, extra_options=extra,
                )

        try:
            with _quiet():
                # Shape inference + ORT graph optimisation first: gives the quantizer the fused graph
                # (Conv+BN, Conv+Relu patterns) and every intermediate shape.
                quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
                _spatial_means_to_global_pool(pre)
            bits = weight_bits or 8
            quantize(bits)
            why = "forced" if weight_bits else "the host's fused kernels compute the QDQ arithmetic"
            if weight_bits is None:
                drift = kernel_drift(out, calib[:64])
                if drift["rel_max_abs"] > KERNEL_DRIFT_TOLERANCE:
                    bits = 7
                    why = (f"with 8-bit weights this host's fused kernels drifted from the QDQ arithmetic"
                           f" (max |diff| {drift['rel_max_abs']:.1%} of the output range, argmax agreement"
                           f" {drift['agreement']:.1%}): u8·s8 pair sums saturate without VNNI")
                    quantize(bits)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"int8 quantization of {fp32_path} failed: {_first_line(e)}") from None
        proto = onnx.load(str(out))
    _requantize_permuted_outputs(proto)
    _order_depth_first(proto)
    md.update({"weight_bits": str(bits), "weight_bits_reason": why, "activations": activations})
    del proto.metadata_props[:]
    _set_metadata(proto, md)
    try:
        onnx.checker.check_model(proto)
    except Exception as e:
        raise ExportError(f"quantized model {int8_path} fails onnx.checker: {_first_line(e)}") from None
    _atomic_save(proto, int8_path)
    return int8_path


# pure permutations ORT's quantizer (1.2x) leaves in float after a DequantizeLinear
_PERMUTE_OPS = ("DepthToSpace", "SpaceToDepth")


def _requantize_permuted_outputs(proto: Any) -> None:
    """Give a graph output that a permutation (an SR network's final pixel shuffle) makes of a
    ``DequantizeLinear`` a ``QuantizeLinear → DequantizeLinear`` pair with the input's scale and zero
    point, in place. Same values (a permutation of int8 steps); the output is then an int8 tensor
    dequantized, as in the TFLite model, not a float one."""
    from onnx import helper

    g = proto.graph
    made_by = {o: n for n in g.node for o in n.output}
    for out in g.output:
        node = made_by.get(out.name)
        dq = made_by.get(node.input[0]) if node is not None and node.op_type in _PERMUTE_OPS else None
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        permuted = out.name + "_permuted"
        node.output[0] = permuted
        at = list(g.node).index(node) + 1
        q = helper.make_node("QuantizeLinear", [permuted, *dq.input[1:]], [permuted + "_q"], name=permuted + "_q")
        dq2 = helper.make_node("DequantizeLinear", [permuted + "_q", *dq.input[1:]], [out.name], name=permuted + "_dq")
        g.node.insert(at, q)
        g.node.insert(at + 1, dq2)


def _order_depth_first(proto: Any) -> None:
    """Store the nodes in depth-first post-order from the graph outputs (each node's inputs in their
    order), in place: a branch that only the last ops read (an SR network's bicubic residual of the
    input) runs just before them, as in the network's own code, not first, as ORT's optimizer sorts
    it. The order the graph memory figures follow; any other valid order computes the same values."""
    g = proto.graph
    made_by = {o: i for i, n in enumerate(g.node) for o in n.output}
    done: set[int] = set()
    order: list[int] = []
    for out in g.output:
        if out.name not in made_by:
            continue
        stack = [(made_by[out.name], 0)]
        while stack:
            i, k = stack.pop()
            if k == 0 and i in done:
                continue
            ins = [made_by[x] for x in g.node[i].input if x in made_by]
            while k < len(ins) and ins[k] in done:
                k += 1
            if k < len(ins):
                stack += [(i, k + 1), (ins[k], 0)]
            elif i not in done:
                done.add(i)
                order.append(i)
    order += [i for i in range(len(g.node)) if i not in done]  # nodes no output reads: kept, last
    nodes = [g.node[i] for i in order]
    del g.node[:]
    g.node.extend(nodes)


def _spatial_means_to_global_pool(path: Path) -> int:
    """Rewrite ``ReduceMean`` over every spatial axis ([N, C, …]) as ``GlobalAveragePool``
    (+ ``Flatten`` when ``keepdims=0``), in place. Same values; ONNX Runtime runs the quantized
    GlobalAveragePool as an integer QLinearGlobalAveragePool, a ReduceMean only in float between
    DequantizeLinear and QuantizeLinear. Returns how many were rewritten."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    rank = {v.name: len(v.type.tensor_type.shape.dim) for v in [*g.value_info, *g.input, *g.output]
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    done = 0
    for node in list(g.node):
        r = rank.get(node.input[0], 0)
        if node.op_type != "ReduceMean" or r < 3:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        axes = consts.get(node.input[1]) if len(node.input) > 1 and node.input[1] else attrs.get("axes")
        if axes is None or sorted(int(a) % r for a in np.ravel(axes)) != list(range(2, r)):
            continue
        keep = int(attrs.get("keepdims", 1))
        pooled = node.output[0] if keep else node.output[0] + "_gap"
        new = [helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=(node.name or "mean") + "_gap")]
        if not keep:
            new.append(helper.make_node("Flatten", [pooled], [node.output[0]], name=(node.name or "mean") + "_flat", axis=1))
        at = list(g.node).index(node)
        g.node.remove(node)
        for k, n in enumerate(new):
            g.node.insert(at + k, n)
        done += 1
    if done:
        onnx.save(model, str(path))
    return done


# ops ONNX Runtime's optimised int8 graph may keep: integer kernels, (de)quantization, and ops that
# only move int8 values (layout, max pooling, pixel shuffles)
INTEGER_KERNELS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QGemm", "QLinearMatMul", "MatMulInteger",
                   "ConvInteger", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearAdd", "QLinearMul",
                   "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearSoftmax", "QLinearReduceMean",
                   "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "MaxPool", "DepthToSpace",
                   "SpaceToDepth", "Concat", "Slice", "Pad", "Gather"}


def runtime_float_kernels(path: str | Path) -> list[str]:
    """Op types ONNX Runtime (CPU) runs in float after fusing ``path``'s Q/DQ pairs: empty for a
    model whose every compute op became an integer kernel.

    Known case (onnxruntime 1.32): a tensor read by two nodes (a residual input) shares one
    DequantizeLinear, which blocks fusion of both readers, so residual Conv/Add stay float; the
    quantizer's DedicatedQDQPair does not help because ONNX Runtime's common-subexpression
    elimination merges the duplicated pairs again before fusing."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as td:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.optimized_model_filepath = str(Path(td) / "optimized.onnx")
        try:
            ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ExportError(f"cannot load ONNX model {path}: {_first_line(e)}") from None
        ops = [n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node]
    return sorted({o for o in ops if o not in INTEGER_KERNELS})


FLOAT_OUTPUT_OPS = {"Gemm"}  # a final op of these types keeps a float (dequantized int32) output


def _output_op(path: str | Path) -> str | None:
    """Op type of the node that produces the graph's (first) output, if that op occurs only once."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    node = next((n for n in g.node if g.output[0].name in n.output), None)
    if node is None or sum(n.op_type == node.op_type for n in g.node) != 1:
        return None
    return node.op_type


def _input_name(path: str | Path) -> str:
    import onnx

    return onnx.load(str(path), load_external_data=False).graph.input[0].name


def _session(path: str | Path, fused: bool = True) -> Any:
    """A CPU session; ``fused=False`` runs the graph as written (no fusion, QDQ as float ops)."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ExportError(f"model file not found: {path}")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not fused:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"cannot load ONNX model {path}: {_first_line(e)}") from None


def run_onnx(path: str | Path, x: np.ndarray, batch: int = 256, fused: bool = True) -> np.ndarray:
    """Logits of an ONNX model for inputs ``x`` [N, …] on the CPU, in batches."""
    sess = _session(path, fused)
    inp = sess.get_inputs()[0]
    dim0 = inp.shape[0]
    step = dim0 if isinstance(dim0, int) and dim0 > 0 else batch
    x = np.asarray(x, dtype=np.float32)
    outs = [sess.run(None, {inp.name: np.ascontiguousarray(x[i:i + step])})[0] for i in range(0, len(x), step)]
    return np.concatenate(outs, axis=0) if outs else np.zeros((0,), np.float32)


def evaluate_onnx(path: str | Path, x: np.ndarray, y: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of an ONNX classifier."""
    logits = run_onnx(path, x, batch)
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(y)))


def check_parity(model: Any, onnx_path: str | Path, x: np.ndarray, atol: float = 1e-4) -> float:
    """Max |logits_torch − logits_onnx| over ``x``; raises ExportError above ``atol``."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(torch.as_tensor(np.asarray(x, dtype=np.float32))).cpu().numpy()
    finally:
        model.train(was_training)
    got = run_onnx(onnx_path, x)
    if got.shape != ref.shape:
        raise ExportError(f"parity check of {onnx_path}: output shape {got.shape} != PyTorch {ref.shape}")
    diff = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    if not diff <= atol:
        raise ExportError(f"parity check of {onnx_path} failed: max |diff| {diff:.3g} > {atol:g}")
    return diff
