"""Fixed super-resolution baselines as layer graphs (priced and built like any sr-dlsr spec).

Both run on one tile of the data configuration (``tile_in`` × ``tile_in`` LR pixels, every layer
SAME-padded, stride 1) and end in a sub-pixel tail (conv → PixelShuffle, DEPTH_TO_SPACE in
TFLite). They are built as :class:`~edgenas.layers.GraphNet`\\ s of biased convs without
BatchNorm (the sr-dlsr space's own layer factory), so the same cost models, exporters, latency
measurement and scoring apply. Differences from the papers, forced by the int8 TFLite route
(which converts conv, ReLU, add and DEPTH_TO_SPACE, and no transposed conv, PReLU or tanh):

* ``fsrcnn`` — Dong et al. 2016, FSRCNN(d = 56, s = 12, m = 4): conv 5×5 C → 56, shrink 1×1
  56 → 12, four 3×3 12 → 12 maps, expand 1×1 12 → 56, ReLU after each (PReLU in the paper);
  the 9×9 transposed-conv upsampler is replaced by a 3×3 conv 56 → C·s² + PixelShuffle (the
  sub-pixel form its mobile ports use). ×2, Y: 10.1 k parameters (the paper's 12.5 k include the
  deconvolution's 9·9·56 weights; the sub-pixel conv has 9·56·C·s²).
* ``espcn`` — Shi et al. 2016: conv 5×5 C → 64, conv 3×3 64 → 32, conv 3×3 32 → C·s² +
  PixelShuffle; ReLU (tanh in the paper). ×2, Y: 21.3 k parameters.

Neither has a global residual (as published); the searched networks have one (a fixed bicubic
conv), which is part of what the search is compared on.
"""

from __future__ import annotations

from typing import Any, Callable

from edgenas.spec import LayerDesc, with_liveness


def _conv(data: Any, name: str, c_in: int, c_out: int, k: int, act: str | None) -> LayerDesc:
    t, p = data.tile_in, (k - 1) // 2
    return LayerDesc(name, "conv2d", (c_in, t, t), (c_out, t, t), (k, k), (1, 1), (p, p, p, p),
                     activation=act, calls=data.tiles_per_frame)


def _tail(data: Any, c_in: int) -> list[LayerDesc]:
    c, s, t = data.channels, data.scale, data.tile_in
    return [_conv(data, "tail", c_in, c * s * s, 3, None),
            LayerDesc("shuffle", "pixel_shuffle", (c * s * s, t, t), (c, t * s, t * s), stride=(s, s), bias=False,
                      calls=data.tiles_per_frame)]


def fsrcnn_layers(data: Any, d: int = 56, s: int = 12, m: int = 4) -> list[LayerDesc]:
    layers = [_conv(data, "feature", data.channels, d, 5, "relu"), _conv(data, "shrink", d, s, 1, "relu")]
    layers += [_conv(data, f"map{i}", s, s, 3, "relu") for i in range(m)]
    layers += [_conv(data, "expand", s, d, 1, "relu"), *_tail(data, d)]
    return with_liveness(layers)


def espcn_layers(data: Any) -> list[LayerDesc]:
    return with_liveness([_conv(data, "conv1", data.channels, 64, 5, "relu"), _conv(data, "conv2", 64, 32, 3, "relu"),
                          *_tail(data, 32)])


BASELINES: dict[str, Callable[[Any], list[LayerDesc]]] = {"fsrcnn": fsrcnn_layers, "espcn": espcn_layers}


def build(name: str, data: Any) -> Any:
    """The torch network of baseline ``name`` for data configuration ``data``."""
    from edgenas.layers import GraphNet
    from edgenas.spaces.sr_dlsr import _layer_module

    return GraphNet(BASELINES[name](data), _layer_module)
