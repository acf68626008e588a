"""Run plots: the search history picture, one panel per budget."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from edgenas.plots import search_history


def _history(n: int = 6) -> list[dict]:
    return [{"epoch": e + 1, "phase": "warmup" if e < 2 else "arch", "train_acc": 0.1 * e, "entropy": 1.0 - 0.1 * e,
             "val_acc": None if e < 2 else 0.1 * e, "expected_latency": 0.3 - 0.01 * e, "derived_latency": 0.25,
             "expected_ram": 9e4, "derived_ram": 8e4} for e in range(n)]


def test_search_history_draws_a_panel_per_budget(tmp_path: Path) -> None:
    one = search_history(_history(), {"latency": 0.2}, tmp_path / "a" / "search.png")
    two = search_history(_history(), {"latency": 0.2, "ram": 64 * 1024}, tmp_path / "b.png")
    none = search_history(_history(), {}, tmp_path / "c.png")
    h = [Image.open(p).size[1] for p in (none, one, two)]
    assert h[0] < h[1] < h[2]  # entropy + metric, then one more panel per budget searched
    # a budget the history has no cost for (not a constraint of this search) draws no panel
    assert Image.open(search_history(_history(), {"flash": 1e5}, tmp_path / "d.png")).size[1] == h[0]
    assert search_history([], {"latency": 0.2}, tmp_path / "e.png") is None and not (tmp_path / "e.png").exists()
