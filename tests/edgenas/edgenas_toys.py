"""Small building blocks for the core tests (imported by the test modules of this folder)."""

from __future__ import annotations

import itertools
from dataclasses import replace
import random
from typing import Iterator

import torch

from edgenas.search import SplitTensors
from edgenas.spaces.base import SearchSpace
from edgenas.spaces.kws_dscnn import KWSDSCNNSpace, KWSSpaceConfig
from edgenas.spaces.kws_tcn import KWSTCNSpace, KWSTCNSpaceConfig
from edgenas.spec import ArchSpec

# both strides explicitly (the default space has only "2x2"): the toy space keeps a multi-option,
# sampled, shape-changing arch point, and the tests that use the costlier "2x1" stem keep it
TINY = KWSSpaceConfig(widths=(8, 16), n_blocks=2, n_mfcc=(10,), windows=("40/20",), sample_rates=(8000,),
                      stem_strides=("2x1", "2x2"))


def tiny_space(num_classes: int = 3, **overrides: object) -> KWSDSCNNSpace:
    """One data option (8 kHz, 10 MFCC, 40/20 ms → 49×10), strides 2x1/2x2, widths 8/16, two blocks: 432 specs."""
    cfg = replace(TINY, **overrides)
    return KWSDSCNNSpace(num_classes, cfg)


# one data option (8 kHz, 10 MFCC, 40/20 ms → 49×10), 2 blocks of every op kind: 576 specs
TINY_TCN = KWSTCNSpaceConfig(sample_rates=(8000,), n_mfcc=(10,), windows=("40/20",), stem_kernels=(3, 5),
                             widths=(8, 16), n_blocks=2, block_ops=("conv5", "dw3", "skip"), block_strides=(1, 2))


def tiny_tcn_space(num_classes: int = 5, **overrides: object) -> KWSTCNSpace:
    return KWSTCNSpace(num_classes, replace(TINY_TCN, **overrides))


def all_specs(space: SearchSpace) -> Iterator[ArchSpec]:
    """Every spec of a (small) space."""
    points = space.choice_points()
    for combo in itertools.product(*[p.options for p in points]):
        yield space.spec(dict(zip([p.name for p in points], combo)))


def random_specs(space: SearchSpace, n: int, seed: int = 0) -> list[ArchSpec]:
    rng = random.Random(seed)
    return [space.sample(rng) for _ in range(n)]


def class_means(shape: tuple[int, int], num_classes: int = 3, seed: int = 99) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 1.5 * torch.randn(num_classes, 1, *shape, generator=g)


def toy_split(n: int, shape: tuple[int, int], seed: int, num_classes: int = 3, noise: float = 0.7) -> SplitTensors:
    """Learnable features: a fixed random pattern per class plus Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = class_means(shape, num_classes)[y] + noise * torch.randn(n, 1, *shape, generator=g)
    return SplitTensors(x.contiguous(), y)
