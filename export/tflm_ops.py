"""The builtin operators TensorFlow Lite Micro can run (for the TFLM compatibility check).

Taken from the ``Add*()`` methods of ``tflite::MicroMutableOpResolver`` in
``tensorflow/lite/micro/micro_mutable_op_resolver.h`` of github.com/tensorflow/tflite-micro at
commit 933f830139560b2f9a47b5418439350c728a796f (2022 snapshot). Newer TFLM releases only add
ops, so a model that passes against this list loads on any later TFLM; a model that fails may
still load on a newer one (the report says which ops were missing). The names are the
``tflite::BuiltinOperator`` enum names (as in the TFLite flatbuffer schema).

Op names are necessary, not sufficient: a TFLM kernel may still reject a parameter combination
(e.g. an unusual dtype); the int8 CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED / ADD / MEAN / PAD /
RESHAPE / DEPTH_TO_SPACE kernels our exports use are all supported there.
"""

from __future__ import annotations

TFLM_SOURCE = ("tensorflow/tflite-micro tensorflow/lite/micro/micro_mutable_op_resolver.h "
               "@ 933f830139560b2f9a47b5418439350c728a796f")

TFLM_BUILTIN_OPS: frozenset[str] = frozenset({
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "ASSIGN_VARIABLE", "AVERAGE_POOL_2D",
    "BATCH_TO_SPACE_ND", "BROADCAST_ARGS", "BROADCAST_TO", "CALL_ONCE", "CAST", "CEIL",
    "CONCATENATION", "CONV_2D", "COS", "CUMSUM", "DEPTH_TO_SPACE", "DEPTHWISE_CONV_2D",
    "DEQUANTIZE", "ELU", "EQUAL", "EXP", "EXPAND_DIMS", "FILL", "FLOOR", "FLOOR_DIV", "FLOOR_MOD",
    "FULLY_CONNECTED", "GATHER", "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "IF",
    "L2_NORMALIZATION", "L2_POOL_2D", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND",
    "LOGICAL_NOT", "LOGICAL_OR", "LOGISTIC", "MAXIMUM", "MAX_POOL_2D", "MIRROR_PAD", "MEAN",
    "MINIMUM", "MUL", "NEG", "NOT_EQUAL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE",
    "READ_VARIABLE", "REDUCE_MAX", "RELU", "RELU6", "RESHAPE", "RESIZE_BILINEAR",
    "RESIZE_NEAREST_NEIGHBOR", "ROUND", "RSQRT", "SHAPE", "SIN", "SLICE", "SOFTMAX",
    "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT", "SPLIT_V", "SQUEEZE", "SQRT", "SQUARE",
    "STRIDED_SLICE", "SUB", "SVDF", "TANH", "TRANSPOSE_CONV", "TRANSPOSE", "UNPACK",
    "UNIDIRECTIONAL_SEQUENCE_LSTM", "VAR_HANDLE", "WHILE", "ZEROS_LIKE",
})

# custom operators the same resolver can register (AddCircularBuffer, AddDetectionPostprocess,
# AddEthosU); any other custom op (e.g. a TF "Flex" op) cannot run on TFLM
TFLM_CUSTOM_OPS: frozenset[str] = frozenset({"CIRCULAR_BUFFER", "TFLite_Detection_PostProcess", "ethos-u"})


def tflm_supports(op_name: str) -> bool:
    """Whether TFLite Micro has a kernel registered under ``op_name`` (builtin or custom)."""
    return op_name in TFLM_BUILTIN_OPS or op_name in TFLM_CUSTOM_OPS
