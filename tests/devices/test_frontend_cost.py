"""The front-end table: every data configuration's front end exported once, measured once per
(device, runtime version, threads) on the real runtime, kept in the real SQLite store, priced
for latency, peak RAM and flash."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgenas.devices.frontend_cost import FrontendTable, build_frontend_table, file_memory, frontend_format
from edgenas.devices.registry import get_device
from edgenas.errors import ConfigError
from edgenas.export.graph_memory import onnx_memory_report
from edgenas.spec import DataConfig
from edgenas.store import Store

CONFIGS = [DataConfig(8000, 10, 40, 40.0, 20.0), DataConfig(16000, 20, 40, 30.0, 10.0)]


def test_onnx_front_ends_are_measured_once_and_read_from_the_store(tmp_path: Path) -> None:
    dev = get_device("onnxruntime-cpu")
    events: list[tuple[str, dict]] = []
    with Store(tmp_path / "s.sqlite") as store:
        t1 = build_frontend_table(dev, store, CONFIGS, tmp_path / "cache", runs=20, warmup=3,
                                  sink=lambda e, **f: events.append((e, f)))
        assert t1.measured == 2 and t1.fmt == "onnx" and t1.stat == "median"
        start = next(f for e, f in events if e == "frontend_table.start")
        assert (start["known"], start["todo"]) == (0, 2)
        rows = store.measurements(kind="frontend", device="onnxruntime-cpu")
        assert len(rows) == 2 and {r["fmt"] for r in rows} == {"onnx-fp32"}
        mtimes = {k: Path(v.file).stat().st_mtime_ns for k, v in t1.entries.items()}

        t2 = build_frontend_table(dev, store, CONFIGS, tmp_path / "cache", runs=20, warmup=3)
        assert t2.measured == 0 and t2.entries == t1.entries  # same files, same stored samples
        assert {k: Path(v.file).stat().st_mtime_ns for k, v in t2.entries.items()} == mtimes  # not re-exported

        t3 = build_frontend_table(get_device("onnxruntime-cpu", threads=2), store, CONFIGS, tmp_path / "cache",
                                  runs=20, warmup=3)
        assert t3.measured == 2 and t3.threads == 2  # another thread count is another measurement

    for cfg in CONFIGS:
        fe = t1.get(cfg)
        assert fe.latency_ms > 0
        assert fe.ram_bytes == onnx_memory_report(fe.file)["peak_activation_bytes"]
        assert fe.flash_bytes == Path(fe.file).stat().st_size
        # the front end holds at least its input audio and its output features, float32
        assert fe.ram_bytes >= 4 * (cfg.clip_samples + cfg.n_frames * cfg.n_mfcc)
    small, large = (t1.get(c) for c in CONFIGS)
    assert large.ram_bytes > small.ram_bytes  # 16 kHz with a 10 ms hop holds far more frames
    assert t1.values("ram_bytes") == {c.key(): float(t1.get(c).ram_bytes) for c in CONFIGS}
    assert FrontendTable.from_dict(t1.to_dict()) == t1
    with pytest.raises(KeyError, match="no front-end cost"):
        t1.get(DataConfig(8000, 40, 40, 40.0, 20.0))


def test_tflite_front_end_on_litert(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow", reason="tensorflow-cpu not installed (pip install 'edgenas[tflite]')")
    dev = get_device("litert-cpu")
    assert frontend_format(dev) == "tflite"
    with Store(tmp_path / "s.sqlite") as store:
        t = build_frontend_table(dev, store, CONFIGS[:1], tmp_path / "cache", stat="p10", runs=20, warmup=3)
    fe = t.get(CONFIGS[0])
    assert fe.file.endswith(".tflite") and fe.latency_ms > 0 and t.stat == "p10"
    assert (fe.ram_bytes, fe.flash_bytes) == file_memory(Path(fe.file))


def test_a_device_without_onnx_or_tflite_is_a_clear_error() -> None:
    class TorchOnly:
        name, artifact_format = "cuda-torch", "pt"

    with pytest.raises(ConfigError, match="--budget-scope model"):
        frontend_format(TorchOnly())  # type: ignore[arg-type]


def test_a_ram_budget_chooses_the_low_memory_front_end_where_the_fast_one_does_not_fit(tmp_path: Path) -> None:
    dev = get_device("onnxruntime-cpu")
    with Store(tmp_path / "s.sqlite") as store:
        t = build_frontend_table(dev, store, CONFIGS, tmp_path / "cache", runs=20, warmup=3, lowmem=True)
    assert t.measured == 4  # both implementations of both configurations
    for cfg in CONFIGS:
        opts = t.options[cfg.key()]
        assert {o.impl for o in opts} == {"fft2", "fft2-lowmem"}
        assert opts[0].latency_ms <= opts[1].latency_ms and t.get(cfg) == opts[0]  # fastest until a budget
        fast, low = (next(o for o in opts if o.impl == i) for i in ("fft2", "fft2-lowmem"))
        assert low.ram_bytes < 0.6 * fast.ram_bytes
        assert Path(fast.file).name == f"{cfg.key()}.fft2.onnx"
    small, large = CONFIGS
    fast_small = next(o for o in t.options[small.key()] if o.impl == "fft2")
    model = {small.key(): 20_000.0, large.key(): 20_000.0}
    # room for the fast 8 kHz front end, not for the fast 16 kHz one: that one goes low-memory;
    # the 8 kHz one keeps its fastest implementation (both fit; which is faster is the measurement's say)
    chosen = t.choose(fast_small.ram_bytes + 20_000, model)
    assert chosen.get(small) == t.options[small.key()][0] and chosen.get(large).impl == "fft2-lowmem"
    # nothing fits: the lowest-RAM implementation (the configuration is infeasible either way)
    assert chosen.choose(1.0, model).get(large).impl == "fft2-lowmem"
    assert FrontendTable.from_dict(chosen.to_dict()) == chosen
