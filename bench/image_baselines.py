"""Fixed image-classification baselines as layer graphs (priced and built like any spec).

* ``resnet8`` — MLPerf Tiny's image-classification reference (CIFAR-10, 32×32 RGB): a 3×3 conv
  of 16 → three residual stages of 16, 32, 64 channels (two 3×3 convs each; stages 2 and 3 stride 2
  with a 1×1 strided shortcut) → global average pooling → linear. 78.7 k parameters, 12.5 M MACs
  (with 10 classes, as the reference). Run as a :class:`~edgenas.layers.GraphNet` from its
  :class:`~edgenas.spec.LayerDesc` list, so the same cost models, exporters and bundle apply.
"""

from __future__ import annotations

from edgenas.spec import LayerDesc, same_pad, with_liveness


def _conv(name: str, c_in: int, c_out: int, hw: int, k: int, s: int, act: str | None, inputs: tuple[str, ...] = ()
          ) -> LayerDesc:
    pt, pb, o = same_pad(hw, k, s)
    return LayerDesc(name, "conv2d", (c_in, hw, hw), (c_out, o, o), (k, k), (s, s), (pt, pb, pt, pb),
                     activation=act, inputs=inputs)


def resnet8_layers(num_classes: int = 10, resolution: int = 32, channels: int = 3) -> list[LayerDesc]:
    layers = [_conv("stem", channels, 16, resolution, 3, 1, "relu", inputs=("",))]
    prev, c, hw = "stem", 16, resolution
    for i, (w, s) in enumerate(((16, 1), (32, 2), (64, 2))):
        a = _conv(f"s{i}.conv1", c, w, hw, 3, s, "relu", inputs=(prev,))
        o = a.out_shape[1]
        b = _conv(f"s{i}.conv2", w, w, o, 3, 1, None)
        layers += [a, b]
        short = prev
        if s != 1 or c != w:
            layers.append(_conv(f"s{i}.short", c, w, hw, 1, s, None, inputs=(prev,)))
            short = f"s{i}.short"
        layers.append(LayerDesc(f"s{i}.add", "add", (w, o, o), (w, o, o), bias=False,
                                inputs=(f"s{i}.conv2", short)))
        # ReLU after the add: the reference applies it; fused here as a 1x1-free activation is not a
        # LayerDesc kind, so the next conv's input is the add's output (a ≤1% accuracy difference
        # in the reference's ablations is not claimed; the cost is identical)
        prev, c, hw = f"s{i}.add", w, o
    layers += [LayerDesc("pool", "global_avgpool", (c, hw, hw), (c, 1, 1), bias=False),
               LayerDesc("fc", "linear", (c, 1, 1), (num_classes, 1, 1))]
    return with_liveness(layers)


BASELINES = {"resnet8": resnet8_layers}
