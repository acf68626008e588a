"""Pictures of a run, written into its ``plots/`` folder and linked from ``report.md``.

* ``search.png`` — the search history per epoch: choice entropy, train/val metric, and for every
  budget the expected cost under the choice probabilities and the derived spec's cost against
  the limit (warm-up epochs shaded).

Matplotlib runs headless (Agg); the functions take plain records (``search.json``'s history,
the budgets' limits) so the report renders from the run's record, not from a pipeline object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from edgenas.fileio import atomic_write_bytes

UNITS = {"latency": ("ms", 1.0), "ram": ("KiB", 1 / 1024), "flash": ("KiB", 1 / 1024)}


def _figure(rows: int, cols: int = 1, height: float = 2.4) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(rows, cols, figsize=(7.5, height * rows), squeeze=False)
    return fig, axes[:, 0] if cols == 1 else axes


def _save(fig: Any, path: Path) -> Path:
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def search_history(history: Sequence[Mapping[str, Any]], limits: Mapping[str, float], path: Path,
                   metric: str = "accuracy") -> Path | None:
    """``search.png`` (module doc) from ``search.json``'s history; None when there is no history."""
    if not history:
        return None
    budgets = [n for n in limits if any(f"expected_{n}" in h for h in history)]
    fig, axes = _figure(2 + len(budgets))
    ep = [h["epoch"] for h in history]
    warm = [h["epoch"] for h in history if h.get("phase") != "arch"]
    for ax in axes:
        if warm:
            ax.axvspan(min(warm) - 0.5, max(warm) + 0.5, color="0.92", lw=0)
        ax.grid(alpha=0.3)
    axes[0].plot(ep, [h["entropy"] for h in history], marker=".", color="C4")
    axes[0].set_ylabel("choice entropy")
    axes[0].set_title("search history (grey: warm-up, weights only)", fontsize=10)
    axes[1].plot(ep, [h["train_acc"] for h in history], marker=".", label=f"train {metric}")
    val = [(h["epoch"], h["val_acc"]) for h in history if h.get("val_acc") is not None]
    if val:
        axes[1].plot(*zip(*val), marker=".", label=f"val {metric} (drives the choices)")
    axes[1].set_ylabel(metric)
    axes[1].legend(fontsize=8)
    for ax, name in zip(axes[2:], budgets):
        unit, f = UNITS.get(name, ("", 1.0))
        ax.plot(ep, [h[f"expected_{name}"] * f for h in history], marker=".", label="expected (probabilities)")
        ax.plot(ep, [h[f"derived_{name}"] * f for h in history], marker=".", label="derived spec")
        ax.axhline(limits[name] * f, color="C3", ls="--", label="budget")
        ax.set_ylabel(f"{name}, {unit}")
        ax.legend(fontsize=8)
    axes[-1].set_xlabel("epoch")
    return _save(fig, path)

