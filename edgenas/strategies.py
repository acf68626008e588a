"""Search strategies: how choice probabilities are relaxed and sampled. Independent of the space.

Every strategy owns one logit vector per choice point and gives, per step, the gates the supernet
runs under. Choice points marked ``sampled`` (data choices, strides) are always drawn one-hot
with straight-through Gumbel-softmax, whatever the strategy: their options give tensors of
different shapes that cannot be summed.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from edgenas.registry import Registry
from edgenas.spaces.base import ChoicePoint


class Strategy(nn.Module):
    """Base: logits per choice point, temperature annealed exponentially over the search."""

    hard: bool = True  # whether architecture choices run single-path (one op per step)

    def __init__(self, points: list[ChoicePoint], tau_start: float = 5.0, tau_end: float = 0.5) -> None:
        super().__init__()
        self.points = points
        self.logits = nn.ParameterDict({self._k(p.name): nn.Parameter(torch.zeros(len(p.options))) for p in points})
        self.tau_start, self.tau_end = tau_start, tau_end
        self.tau = tau_start
        self.frozen: dict[str, int] = {}  # choice point → the option it is fixed to (see :meth:`freeze`)

    def freeze(self, name: str, index: int) -> None:
        """Fix a choice point to one option: its probabilities and gates become that one-hot
        constant (no gradient reaches its logits) and it leaves the entropy term."""
        self.frozen[name] = index

    def _fixed(self, p: ChoicePoint) -> torch.Tensor:
        return F.one_hot(torch.tensor(self.frozen[p.name]), len(p.options)).float()

    @staticmethod
    def _k(name: str) -> str:
        return name.replace(".", "__")  # ParameterDict keys may not contain dots

    def anneal(self, progress: float) -> None:
        """``progress`` in [0, 1] over the architecture-updating part of the search."""
        p = min(max(progress, 0.0), 1.0)
        self.tau = self.tau_start * math.exp(p * math.log(self.tau_end / self.tau_start))

    def probs(self, sharpen: bool = False) -> dict[str, torch.Tensor]:
        """The current choice distribution (what is sampled and derived from).

        ``sharpen`` divides the logits by min(1, τ): the constraint terms see a distribution that
        approaches the argmax as τ anneals, so the cost the budgets act on converges to the cost
        of the spec that will be derived (soft and derived costs must agree, see DESIGN.md).
        """
        t = min(1.0, self.tau)
        return {p.name: self._fixed(p) if p.name in self.frozen
                else F.softmax(self.logits[self._k(p.name)] / (t if sharpen else 1.0), dim=0) for p in self.points}

    def gates(self) -> dict[str, torch.Tensor]:
        out = {}
        for p in self.points:
            logits = self.logits[self._k(p.name)]
            if p.name in self.frozen:
                out[p.name] = self._fixed(p)
            elif p.sampled or self.hard:
                out[p.name] = F.gumbel_softmax(logits, tau=self.tau, hard=True)
            else:
                out[p.name] = self.relaxed(logits)
        return out

    def relaxed(self, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def entropy(self) -> torch.Tensor:
        """Mean normalised entropy of the choice distributions (0 = one-hot, 1 = uniform)."""
        terms = []
        for p in self.points:
            if len(p.options) < 2 or p.name in self.frozen:
                continue
            pr = F.softmax(self.logits[self._k(p.name)], dim=0)
            terms.append(-(pr * torch.log(pr + 1e-12)).sum() / math.log(len(p.options)))
        return torch.stack(terms).mean() if terms else torch.zeros(())


STRATEGIES: Registry[Callable[..., Strategy]] = Registry("strategy")


@STRATEGIES.register("gumbel")
class GumbelRelaxed(Strategy):
    """Gumbel-softmax (default): every step runs a *relaxed* Gumbel-softmax sample of each choice
    (FBNet-style), whose temperature anneals towards one-hot, so late in the search each step is
    nearly a single path. Measured on FSDD: the hard single path from scratch stayed near chance
    after 300 supernet steps (a plain DS-CNN's sub-networks share no features across depths and
    kernels), the relaxed sample reached 55%."""

    hard = False

    def relaxed(self, logits: torch.Tensor) -> torch.Tensor:
        return F.gumbel_softmax(logits, tau=self.tau, hard=False)


@STRATEGIES.register("gumbel-hard")
class GumbelSinglePath(Strategy):
    """Gumbel-softmax single path: one sampled op per choice point per step (straight-through)."""

    hard = True


@STRATEGIES.register("darts")
class DartsMixture(Strategy):
    """DARTS: architecture choices are a softmax mixture of all options (data choices sampled)."""

    hard = False

    def relaxed(self, logits: torch.Tensor) -> torch.Tensor:
        return F.softmax(logits, dim=0)
