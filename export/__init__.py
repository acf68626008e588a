"""Export, quantization, verification, front ends and deployment bundles (``edgenas.export``).

* :mod:`edgenas.export.exporter` — export a trained network in every format, verify each file,
  report (``export/report.json|md``); what fails verification is not shipped.
* :mod:`edgenas.export.onnx_export` — ONNX fp32 (dynamo exporter), int8 static QDQ, parity checks.
* :mod:`edgenas.export.keras_build` — any network of the supported primitives, traced with
  torch.fx, rebuilt as a channels-last Keras model (BatchNorm folded) for the TFLite converter.
* :mod:`edgenas.export.tflite_export` — TFLite fp32 and full-integer int8, run, verify (op list,
  integer-only tensors, TRANSPOSE count, TFLM ops in :mod:`edgenas.export.tflm_ops`, memory).
* :mod:`edgenas.export.frontend` — the DataConfig's MFCC as its own float ONNX / TFLite model.
* :mod:`edgenas.export.bundle` — the deployment bundle (models, front ends, labels, metadata,
  the board-side ``infer.py`` = :mod:`edgenas.export.bundle_infer`).
* :mod:`edgenas.export.graph_memory` — flash / weight / peak activation bytes of an ONNX model.
* :mod:`edgenas.export.micro` — single-layer micro-models and whole-network models with random
  weights, in any latency format, for lookup tables and calibration.

Heavy modules (torch, onnx, onnxruntime, tensorflow) are imported inside the submodules, not here.
"""
