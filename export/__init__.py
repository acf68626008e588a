"""Export, quantization, verification and memory reports (``edgenas.export``).

* :mod:`edgenas.export.onnx_export` — ONNX fp32 (dynamo exporter), int8 static QDQ, parity checks.
* :mod:`edgenas.export.graph_memory` — flash / weight / peak activation bytes of an ONNX model.
* :mod:`edgenas.export.micro` — single-layer micro-models for the latency lookup table.

Heavy modules (torch, onnx, onnxruntime) are imported inside the submodules, not here.
"""
