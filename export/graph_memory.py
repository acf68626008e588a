"""Flash, weight and peak activation memory of an ONNX model, read from the graph.

``peak_activation_bytes`` is the RAM an (integer) runtime needs for activations when it executes
the nodes one at a time in the saved graph's order (ONNX graphs are stored topologically sorted)
and frees each tensor after its last consumer:

* A tensor is live from the step of the node that produces it (graph inputs: from the start)
  through the step of its last consumer (graph outputs: through the end). The memory at a step is
  the sum of the live tensors' sizes; the peak is the maximum over steps. No buffer reuse, no
  in-place ops, no aliasing of Reshape/Flatten outputs.
* Sizes come from ONNX shape inference with every symbolic input dimension set to 1 (batch 1);
  tensors it cannot size are sized by running the model once in ONNX Runtime. Element size comes
  from the dtype, so int8 tensors count 1 byte and float tensors 4.
* Constants are not activations: initializers, ``Constant`` outputs, and outputs of nodes whose
  inputs are all constants (e.g. ``DequantizeLinear`` of an int8 weight) are left out; they are
  in ``weight_bytes`` (initializers and Constant values).

QDQ models (``quantize_int8``) need one more rule, because the float tensors around
``QuantizeLinear``/``DequantizeLinear`` are not what an integer runtime holds. ONNX Runtime fuses
each *node unit* ``DequantizeLinear → op → QuantizeLinear`` into one integer kernel (QLinearConv,
QGemm, …) that reads the int8 input and writes the int8 output; the float tensors between the
Q/DQ and the op never exist. Two modes:

``mode="ort"`` — what ONNX Runtime materialises. A float tensor is **virtual** (not counted) when

  (a) it is produced by a ``DequantizeLinear`` and every consumer is a fused op — a node of a
      type ORT quantizes (:data:`ORT_QDQ_OPS`) whose activation inputs all come from
      ``DequantizeLinear`` and whose outputs all go only to ``QuantizeLinear`` (or a consumer is
      a ``QuantizeLinear``: a requantization) — then the int8 tensor before the DQ stays live
      until that op has run; or
  (b) every consumer is a ``QuantizeLinear`` and it is produced by a fused op (or is a graph
      input) — then the int8 tensor after the Q is live from the step of the op that computes it.

  A float op ORT does not fuse (``ReduceMean`` between a DQ and a Q, as the dynamo exporter writes
  a global average pool) keeps its float tensors, because ORT does materialise them.

``mode="integer"`` (default) — what a fully-integer runtime (TFLite int8, a microcontroller)
needs. Every float tensor of a *quantized region* — computed only from DequantizeLinear outputs
and flowing only into QuantizeLinear — would be int8 there: DQ outputs and Q inputs of the region
are virtual (with the same lifetime hand-over as above) and the other region tensors count 1
byte per element, whatever the op.

In both modes a float graph input that only feeds a ``QuantizeLinear`` and a float graph output
made by a ``DequantizeLinear`` are virtual, as in an integer model that takes and returns int8.
For a fused conv the peak is therefore ``int8 input + int8 output`` of the layer — the quantity of
the analytic estimate "input + output int8 bytes of the biggest layer". An fp32 model has no Q/DQ
and every activation counts 4 bytes in either mode (Conv → Relu are two tensors: no fusion).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgenas.errors import ExportError


# Op types whose DQ → op → Q node units ONNX Runtime's CPU EP runs as integer kernels (QLinearConv,
# QGemm, QLinearAdd, …) or on int8 data directly (data movement ops). An approximation of its QDQ
# selectors; an op not listed (e.g. ReduceMean) runs in float between a DQ and a Q.
ORT_QDQ_OPS = frozenset({
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "AveragePool", "GlobalAveragePool",
    "MaxPool", "LeakyRelu", "Sigmoid", "Softmax", "Concat", "Reshape", "Flatten", "Squeeze",
    "Unsqueeze", "Transpose", "Resize", "Pad", "Gather", "Split", "Slice", "DepthToSpace",
    "SpaceToDepth", "Where", "InstanceNormalization",
})


def _elem_size(data_type: int) -> int:
    from onnx import helper

    return int(np.dtype(helper.tensor_dtype_to_np_dtype(data_type)).itemsize)


def _batch1(model: Any) -> Any:
    """A copy with symbolic input dims set to 1, old value_info dropped, shapes re-inferred."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    init_names = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in init_names:
            continue
        for d in inp.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = 1
    for out in m.graph.output:
        for d in out.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
    del m.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(m, data_prop=True)
    except Exception:
        return m


def _shapes(model: Any) -> dict[str, tuple[int, list[int] | None]]:
    """name → (elem type, dims or None when unknown) for inputs, outputs and value_info."""
    out: dict[str, tuple[int, list[int] | None]] = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if not tt.elem_type:
            continue
        dims: list[int] | None = []
        if not tt.HasField("shape"):
            dims = None
        else:
            for d in tt.shape.dim:
                if d.HasField("dim_value") and d.dim_value > 0:
                    dims.append(int(d.dim_value))
                elif d.HasField("dim_value") and d.dim_value == 0:
                    dims.append(0)
                else:
                    dims = None
                    break
        prev = out.get(vi.name)
        if prev is None or prev[1] is None:
            out[vi.name] = (int(tt.elem_type), dims)
    return out


def _shapes_by_running(model: Any, names: list[str]) -> dict[str, tuple[int, list[int]]]:
    """Sizes of ``names`` by one ONNX Runtime run at batch 1 (intermediates exposed as outputs)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper

    from edgenas.devices.onnxruntime_cpu import random_inputs

    m = onnx.ModelProto()
    m.CopyFrom(model)
    existing = {o.name for o in m.graph.output}
    for n in names:
        if n not in existing:
            m.graph.output.append(helper.make_empty_tensor_value_info(n))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    outs = sess.run(names, random_inputs(sess))
    res: dict[str, tuple[int, list[int]]] = {}
    for n, a in zip(names, outs):
        res[n] = (int(helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype)), list(np.asarray(a).shape))
    return res


def onnx_memory_report(path: str | Path, mode: str = "integer") -> dict[str, Any]:
    """``flash_bytes``, ``weight_bytes``, ``peak_activation_bytes`` (+ where the peak is) of a model file.

    ``mode``: ``"integer"`` (default) — the RAM a fully-integer runtime needs; ``"ort"`` — what
    ONNX Runtime materialises (only fused node units skip their float tensors). See the module doc.
    """
    if mode not in ("integer", "ort"):
        raise ValueError(f"mode must be 'integer' or 'ort', got {mode!r}")
    import onnx
    from onnx import numpy_helper

    path = Path(path)
    if not path.is_file():
        raise ExportError(f"model file not found: {path}")
    try:
        model = onnx.load(str(path))
    except Exception as e:
        raise ExportError(f"cannot read ONNX model {path}: {str(e).splitlines()[0] if str(e) else e}") from None
    g = model.graph
    nodes = list(g.node)

    weight_bytes = 0
    const: set[str] = set()
    for init in g.initializer:
        weight_bytes += int(numpy_helper.to_array(init).nbytes)
        const.add(init.name)
    for node in nodes:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    weight_bytes += int(numpy_helper.to_array(a.t).nbytes)
            const.update(node.output)
        elif node.input and all((not i) or i in const for i in node.input):
            const.update(o for o in node.output if o)

    graph_inputs = [i.name for i in g.input if i.name not in const]
    graph_outputs = {o.name for o in g.output}
    producer: dict[str, int] = {}
    consumers: dict[str, list[int]] = {}
    for step, node in enumerate(nodes):
        for o in node.output:
            if o:
                producer[o] = step
        for i in node.input:
            if i:
                consumers.setdefault(i, []).append(step)

    # --- QDQ fusion (see module docstring) ------------------------------------------------
    def is_dq_output(t: str) -> bool:
        return t in producer and nodes[producer[t]].op_type == "DequantizeLinear"

    def fused(step: int) -> bool:
        node = nodes[step]
        if node.op_type not in ORT_QDQ_OPS or node.domain not in ("", "ai.onnx"):
            return False
        acts = [i for i in node.input if i and i not in const]
        if not acts or not all(is_dq_output(i) for i in acts):
            return False
        outs = [o for o in node.output if o]
        return bool(outs) and all(
            o not in graph_outputs and consumers.get(o)
            and all(nodes[c].op_type == "QuantizeLinear" for c in consumers[o])
            for o in outs
        )

    fused_steps = {s for s in range(len(nodes)) if fused(s)}
    virtual: set[str] = set()
    region: set[str] = set()  # float tensors an integer runtime would hold as int8
    if mode == "integer":
        # forward: derived only from DQ outputs; backward: leads only to QuantizeLinear.
        fwd: set[str] = set()
        for step, node in enumerate(nodes):
            if node.op_type == "DequantizeLinear":
                fwd.update(o for o in node.output if o and o not in const)
            elif node.op_type != "QuantizeLinear":
                acts = [i for i in node.input if i and i not in const]
                if acts and all(i in fwd for i in acts):
                    fwd.update(o for o in node.output if o)
        bwd: set[str] = set()
        for step in range(len(nodes) - 1, -2, -1):
            outs = [o for o in nodes[step].output if o] if step >= 0 else graph_inputs
            for t in outs:
                cons = consumers.get(t, [])
                if t in graph_outputs:
                    ok = step >= 0 and nodes[step].op_type == "DequantizeLinear"
                else:
                    ok = bool(cons) and all(
                        nodes[c].op_type == "QuantizeLinear"
                        or all(o in bwd for o in nodes[c].output if o) for c in cons
                    )
                if ok:
                    bwd.add(t)
        region = (fwd & bwd) | {t for t in graph_inputs if t in bwd and all(
            nodes[c].op_type == "QuantizeLinear" for c in consumers.get(t, []))}
        for t in region:
            p = producer.get(t)
            cons = consumers.get(t, [])
            if (p is not None and nodes[p].op_type == "DequantizeLinear") or (
                cons and all(nodes[c].op_type == "QuantizeLinear" for c in cons)
            ) or (p is None):
                virtual.add(t)
    else:
        for t in list(producer) + graph_inputs:
            if t in const:
                continue
            cons = consumers.get(t, [])
            p = producer.get(t)
            if p is not None and nodes[p].op_type == "DequantizeLinear" and cons and all(
                c in fused_steps or nodes[c].op_type == "QuantizeLinear" for c in cons
            ):
                virtual.add(t)  # (a)
            elif p is not None and nodes[p].op_type == "DequantizeLinear" and t in graph_outputs and not cons:
                virtual.add(t)  # float graph output made by DQ
            elif cons and all(nodes[c].op_type == "QuantizeLinear" for c in cons) and t not in graph_outputs and (
                p is None or p in fused_steps
            ):
                virtual.add(t)  # (b), including a float graph input that only feeds Q

    # --- lifetimes --------------------------------------------------------------------------
    end_step = len(nodes)
    start: dict[str, int] = {}
    end: dict[str, int] = {}
    for t in graph_inputs:
        start[t] = -1
    for t, p in producer.items():
        if t not in const:
            start[t] = p
    for t in start:
        last = max(consumers.get(t, [start[t]]))
        end[t] = end_step if t in graph_outputs else max(last, start[t])
    # A virtual DQ output keeps the DQ's int8 input alive until the virtual tensor's last use;
    # a virtual Q input makes the Q's int8 output live from the virtual tensor's start.
    for step, node in enumerate(nodes):
        if node.op_type == "DequantizeLinear" and node.output[0] in virtual and node.input[0] in end:
            end[node.input[0]] = max(end[node.input[0]], end[node.output[0]])
    for step, node in enumerate(nodes):
        if node.op_type == "QuantizeLinear" and node.input[0] in virtual and node.output[0] in start:
            start[node.output[0]] = min(start[node.output[0]], start[node.input[0]])

    # --- sizes ------------------------------------------------------------------------------
    live = [t for t in start if t not in virtual]
    inferred = _shapes(_batch1(model))
    unknown = [t for t in live if t not in inferred or inferred[t][1] is None]
    if unknown:
        try:
            inferred.update(_shapes_by_running(_batch1(model), unknown))
        except Exception as e:
            raise ExportError(f"cannot size tensors {unknown[:3]} of {path}: {str(e).splitlines()[0]}") from None
    size: dict[str, int] = {}
    for t in live:
        dtype, dims = inferred[t]
        elem = 1 if t in region else _elem_size(dtype)
        size[t] = int(np.prod(dims or [], dtype=np.int64)) * elem

    peak, peak_step, peak_live = 0, -1, []
    for step in range(-1, max(len(nodes), 1)):
        here = [t for t in live if start[t] <= step <= end[t]]
        total = sum(size[t] for t in here)
        if total > peak:
            peak, peak_step, peak_live = total, step, here
    return {
        "flash_bytes": os.path.getsize(path),
        "weight_bytes": weight_bytes,
        "peak_activation_bytes": peak,
        "peak_node": (nodes[peak_step].name or nodes[peak_step].op_type) if 0 <= peak_step < len(nodes) else "<inputs>",
        "peak_step": peak_step,
        "live_at_peak": {t: size[t] for t in peak_live},
        "virtual_tensors": sorted(virtual),
        "mode": mode,
    }
