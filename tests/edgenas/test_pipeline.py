"""The pipeline stage by stage: interruption inside the search, resume from its checkpoint,
stage skipping, and the test split read only after final training (real data, real export)."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import torch

from edgenas import config as C
from edgenas import cost
from edgenas import pipeline as P
from edgenas.errors import ConfigError
from edgenas.runs import RunDir
from edgenas.spec import ArchSpec

SETS = ["space.widths=8,16", "space.n_blocks=2", "space.n_mfcc=10", "space.windows=40/20", "measure.runs=20",
        "measure.lut_runs=5"]


def _cfg(data: Path, **flags: Any) -> C.RunConfig:
    base = {"data": str(data), "test_speakers": ["s2"], "search.epochs": 2, "train.epochs": 2, "max_ram_kb": 512}
    base.update(flags)
    return C.resolve(sets=SETS, flags=base)


@dataclass
class Interrupted:
    path: Path
    first: list[tuple[str, dict[str, Any]]]
    second: list[tuple[str, dict[str, Any]]]
    state_after_interrupt: dict[str, Any]
    checkpoint_epoch: int
    metrics: dict[str, Any]


@pytest.fixture(scope="module")
def interrupted(tone_fsdd: Path, tmp_path_factory: pytest.TempPathFactory) -> Interrupted:
    """Ctrl-C inside the last search epoch, then a resumed pipeline in a fresh RunDir/Pipeline."""
    base = tmp_path_factory.mktemp("pipeline")
    path = base / "runs" / "kws" / "p"
    first: list[tuple[str, dict[str, Any]]] = []
    second: list[tuple[str, dict[str, Any]]] = []
    real_run_search = P.run_search

    def run_search_interrupted(*args: Any, **kwargs: Any) -> Any:
        def hook(rec: dict[str, Any]) -> None:
            if rec["epoch"] == 2:
                raise KeyboardInterrupt

        return real_run_search(*args, **kwargs, epoch_hook=hook)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGENAS_CACHE", str(base / "cache"))  # a fresh cache: every feature set is computed
        mp.setenv("EDGENAS_STORE", str(base / "store.sqlite"))
        cfg = _cfg(tone_fsdd)
        with mp.context() as fault:
            fault.setattr(P, "run_search", run_search_interrupted)
            with RunDir(path, resume=False) as run:
                with pytest.raises(KeyboardInterrupt):
                    P.Pipeline(cfg, run, sink=lambda e, **f: first.append((e, f))).run_all()
        state = json.loads((path / "state.json").read_text())
        ck = torch.load(path / "checkpoints" / "search.pt", weights_only=False)
        saved = C.from_dict(json.loads((path / "config.json").read_text()))
        with RunDir(path, resume=True) as run:
            metrics = P.Pipeline(saved, run, sink=lambda e, **f: second.append((e, f))).run_all()
    return Interrupted(path, first, second, state, ck["epoch"], metrics)


def _index(events: list[tuple[str, dict[str, Any]]], pred) -> list[int]:
    return [i for i, (e, f) in enumerate(events) if pred(e, f)]


def test_interrupt_keeps_finished_stages_and_the_epoch_checkpoint(interrupted: Interrupted) -> None:
    assert set(interrupted.state_after_interrupt["stages"]) == {"config", "data", "budgets"}
    assert interrupted.checkpoint_epoch == 1
    assert [f["epoch"] for e, f in interrupted.first if e == "search.epoch"] == [1, 2]


def test_resume_skips_stages_and_continues_the_search(interrupted: Interrupted) -> None:
    second = interrupted.second
    assert [f["stage"] for e, f in second if e == "stage.skip"] == ["config", "data", "budgets"]
    assert ("search.resumed", {"epoch": 1}) in second
    assert [f["epoch"] for e, f in second if e == "search.epoch"] == [2]
    search = json.loads((interrupted.path / "search.json").read_text())
    assert [h["epoch"] for h in search["history"]] == [1, 2]
    started = [f["stage"] for e, f in second if e == "stage.start"]
    assert started == ["search", "derive", "train", "export", "measure", "report"]
    # the event log of the run directory holds both halves
    logged = [json.loads(x) for x in (interrupted.path / "events.jsonl").read_text().splitlines()]
    assert [x["stage"] for x in logged if x["event"] == "stage.start"].count("search") == 2
    assert not [x for x in logged if x["event"].startswith("progress.")]


def test_test_split_is_read_only_after_final_training(interrupted: Interrupted) -> None:
    def reads(events, split):
        return _index(events, lambda e, f: e == "progress.start" and f["desc"].startswith(f"features fsdd/{split} "))

    first, second = interrupted.first, interrupted.second
    # train and val features are computed up front in the data stage; test is not
    data_end = _index(first, lambda e, f: e == "stage.end" and f["stage"] == "data")[0]
    assert reads(first, "train") and reads(first, "val")
    assert max(reads(first, "train") + reads(first, "val")) < data_end
    assert reads(first, "test") == []
    test_reads = reads(second, "test")
    assert len(test_reads) == 1  # computed once, then served from the cache
    last_epoch = max(_index(second, lambda e, f: e == "train.epoch"))
    train_start = _index(second, lambda e, f: e == "stage.start" and f["stage"] == "train")[0]
    assert train_start < last_epoch < test_reads[0]
    assert reads(second, "train") == [] and reads(second, "val") == []  # from the cache


def test_resumed_run_is_complete_and_consistent(interrupted: Interrupted) -> None:
    path, m = interrupted.path, interrupted.metrics
    for name in ("config.json", "arch.json", "model.pt", "export/model.fp32.onnx", "export/model.int8.onnx", "metrics.json",
                 "report.md", "search.json"):
        assert (path / name).is_file(), name
    assert json.loads((path / "metrics.json").read_text()) == json.loads(json.dumps(m))
    # the run's picture of its search, linked from the report
    assert (path / "plots" / "search.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](plots/search.png)" in (path / "report.md").read_text()
    spec = ArchSpec.from_json((path / "arch.json").read_text())
    state = json.loads((path / "state.json").read_text())
    derive = state["stages"]["derive"]["result"]
    assert ArchSpec.from_dict(derive["spec"]) == spec and derive["hash"] == spec.hash() == m["arch_hash"]
    assert isinstance(derive["repairs"], list)
    est = derive["estimates"]
    # the derived (and repaired) spec holds by the cost model, end to end: front end + model
    assert est["ram_bytes"] + est["frontend_ram_bytes"] <= 512 * 1024
    assert m["budgets"]["ram"]["estimated"] == est["ram_bytes"] + est["frontend_ram_bytes"]
    assert m["budgets"]["ram"]["model"]["estimated"] == est["ram_bytes"]
    assert m["budgets"]["ram"]["model"]["measured"] == m["ram_bytes"]["int8_graph"] > 0
    assert m["budgets"]["ram"]["frontend"]["measured"] == m["ram_bytes"]["frontend"] > 0
    assert m["macs"] == est["macs"] > 0
    train = state["stages"]["train"]["result"]
    assert train["train_examples"] == 48 and train["test_examples"] == 24  # train+val speakers s0, s1; test s2
    assert m["accuracy"]["test_fp32_torch"] == train["test_acc_fp32_torch"]
    assert 0 <= m["accuracy"]["argmax_agreement_int8"] <= 1


def test_latency_quant_must_be_int8_or_fp32(tone_fsdd: Path, tmp_path: Path) -> None:
    cfg = _cfg(tone_fsdd, max_latency_ms=1.0)
    cfg = replace(cfg, measure=replace(cfg.measure, latency_quant="int4"))
    with RunDir(tmp_path / "r", resume=False) as run:
        with pytest.raises(ConfigError, match="latency_quant must be int8 or fp32"):
            P.Pipeline(cfg, run).constraints()


def test_no_budgets_means_no_constraints(tone_fsdd: Path, tmp_path: Path) -> None:
    cfg = _cfg(tone_fsdd, max_ram_kb=0.0)
    with RunDir(tmp_path / "r", resume=False) as run:
        p = P.Pipeline(cfg, run)
        assert p.constraints() == []
        cons = P.Pipeline(replace(cfg, max_ram_kb=32.0, max_flash_kb=4.0), run).constraints()
        assert [(c.name, c.limit) for c in cons] == [("ram", 32 * 1024), ("flash", 4 * 1024)]
        assert all(isinstance(c.model, cost.EndToEnd) for c in cons)  # budgets are end to end by default
        model = P.Pipeline(replace(cfg, max_ram_kb=32.0, budget_scope="model"), run).constraints()
        assert [type(c.model) for c in model] == [cost.LayerCost]
        assert p.space.num_classes == 10 and [d.key() for d in p.space.data_configs()] == \
            ["sr8000_mfcc10_mel40_w40_h20_c1000"]


def test_quantization_aware_epochs_follow_the_float_training(tone_fsdd: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`train.qat_epochs` > 0: the saved model.pt is the fine-tuned one (BN folded, weights on the
    int8 grid), both test accuracies are recorded, and it loads into a freshly built network."""
    import random

    from torch import nn

    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGENAS_STORE", str(tmp_path / "store.sqlite"))
    cfg = _cfg(tone_fsdd)
    cfg = replace(cfg, train=replace(cfg.train, qat_epochs=1))
    with RunDir(tmp_path / "r", resume=False) as run:
        p = P.Pipeline(cfg, run)
        spec = p.space.sample(random.Random(0))
        out = p._stage_train(spec)
        assert {"test_acc_fp32_torch", "test_acc_fp32_torch_before_qat", "qat_seconds"} <= set(out)
        assert (run.path / "checkpoints" / "qat.pt").is_file()
        model = p.load_model(spec)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.all(b.weight == 1) and torch.all(b.running_mean == 0) for b in bns)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight.detach().flatten(1)
            q = w / (w.abs().amax(1, keepdim=True) / 127)
            assert torch.allclose(q, q.round(), atol=1e-3)


def test_speed_perturbed_training_set(tone_fsdd: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`train.speed_perturb`: the training set holds the clips once per factor (plus the originals),
    labels repeated, standardised with the unperturbed train statistics; test features stay plain."""
    import random

    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EDGENAS_STORE", str(tmp_path / "store.sqlite"))
    cfg = _cfg(tone_fsdd)
    cfg = replace(cfg, train=replace(cfg.train, speed_perturb=(0.9, 1.1), epochs=1))
    with RunDir(tmp_path / "r", resume=False) as run:
        p = P.Pipeline(cfg, run)
        d = p.space.data_configs()[0]
        tr, va = p.features("train", d), p.features("val", d)
        x, y = p.training_set(d, ("train", "val"))
        n = len(tr.y) + len(va.y)
        assert len(x) == len(y) == 3 * n and torch.equal(x[:len(tr.y)], tr.x)
        assert torch.equal(y, torch.cat([tr.y, va.y] * 3))
        slow = p.features("train", d, variant=0.9)
        assert torch.equal(x[n:n + len(tr.y)], slow.x) and not torch.allclose(slow.x, tr.x)
        assert len(p.training_set(d)[0]) == 3 * len(tr.y)
        out = p._stage_train(p.space.sample(random.Random(0)))
    assert out["train_examples"] == 3 * n and out["test_examples"] == 24
