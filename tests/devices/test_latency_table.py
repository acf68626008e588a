from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device_toys import make_dscnn
from edgenas.devices.latency_table import FLOOR_MS, LatencyTable, build_latency_table, load_latency_table
from edgenas.devices.onnxruntime_cpu import OnnxRuntimeCPU
from edgenas.export.onnx_export import export_onnx_fp32, quantize_int8
from edgenas.spec import LayerDesc
from edgenas.store import Store

LAYERS = [
    LayerDesc("dw", "conv2d", (16, 12, 5), (16, 12, 5), (3, 3), (1, 1), (1, 1, 1, 1), 16, "relu"),
    LayerDesc("pw", "conv2d", (16, 12, 5), (32, 12, 5), (1, 1), (1, 1), (0, 0, 0, 0), 1, "relu"),
    LayerDesc("pw_again", "conv2d", (16, 12, 5), (32, 12, 5), (1, 1), (1, 1), (0, 0, 0, 0), 1, "relu"),
    LayerDesc("pool", "global_avgpool", (32, 12, 5), (32, 1, 1)),
    LayerDesc("fc", "linear", (32, 1, 1), (10, 1, 1)),
]


@pytest.mark.parametrize("fmt", ["onnx-fp32", "onnx-int8"])
def test_build_and_reuse(tmp_path: Path, fmt: str) -> None:
    dev = OnnxRuntimeCPU()
    events: list[tuple[str, dict[str, Any]]] = []
    with Store(tmp_path / "s.sqlite") as st:
        t1 = build_latency_table(dev, LAYERS, st, fmt, sink=lambda e, **f: events.append((e, f)), runs=10, warmup=2)
        assert t1.measured == 4  # pw_again has pw's key
        assert len(t1.entries) == 4 and t1.overhead_ms > 0
        assert t1.device == dev.name and t1.threads == 1 and t1.fmt == fmt
        names = [e for e, _ in events]
        assert names.count("progress.update") == 4 and "progress.start" in names and "progress.end" in names
        t2 = build_latency_table(dev, LAYERS, st, fmt, runs=10, warmup=2)
        assert t2.measured == 0 and t2.entries == t1.entries and t2.overhead_ms == t1.overhead_ms
        assert load_latency_table(dev, st, fmt).entries == t1.entries
        # another thread count is another table
        t3 = build_latency_table(OnnxRuntimeCPU(threads=2), LAYERS[:1], st, fmt, runs=5, warmup=1)
        assert t3.measured == 1 and len(t3.entries) == 1
        for d in LAYERS:
            assert t1.layer_ms(d) >= FLOOR_MS
        assert t1.model_ms(LAYERS) == pytest.approx(t1.overhead_ms + sum(t1.layer_ms(d) for d in LAYERS))


def test_missing_key_and_floor() -> None:
    d = LAYERS[0]
    table = LatencyTable("dev", "1", 1, "onnx-fp32", {d.key(): 0.01}, overhead_ms=0.02)
    assert table.layer_ms(d) == FLOOR_MS  # entry below the overhead → floor
    assert d in table and LAYERS[1] not in table and table.missing(LAYERS[:2]) == [LAYERS[1]]
    with pytest.raises(KeyError, match="'pw' .* not in the onnx-fp32 latency table"):
        table.layer_ms(LAYERS[1])


@pytest.mark.parametrize("fmt", ["onnx-fp32", "onnx-int8"])
def test_lut_predicts_whole_model(tmp_path: Path, fmt: str) -> None:
    """The table's sum stands for the exported network: one entry per conv/linear/pool node of the
    graph, and the same order of magnitude as the whole model measured. How close it comes is a
    benchmark figure (bench/predictor_error.py: the lookup table alone misses ORT by ~2×, which is
    why the learned predictor exists), not something a unit test on a shared host can pin down —
    CI once saw a median table 3.2× the whole model, p10 here under load reaches 3×."""
    import onnx

    from edgenas.devices.base import pooled

    model = make_dscnn(channels=64, blocks=4)
    path = export_onnx_fp32(model, (1, 1, 49, 10), tmp_path / "m.onnx", {})
    ops = [n.op_type for n in onnx.load(path).graph.node]
    kinds = [d.kind for d in model.layers()]
    assert ops.count("Conv") == kinds.count("conv2d") and ops.count("Gemm") == kinds.count("linear")
    assert ops.count("ReduceMean") == kinds.count("global_avgpool")
    if fmt == "onnx-int8":
        calib = np.random.default_rng(0).standard_normal((64, 1, 49, 10)).astype(np.float32)
        path = quantize_int8(path, tmp_path / "m8.onnx", calib, {})
    dev = OnnxRuntimeCPU()
    with Store(tmp_path / "s.sqlite") as st:
        table = build_latency_table(dev, model.layers(), st, fmt, runs=50, warmup=5, stat="p10")
        assert table.stat == "p10" and table.missing(model.layers()) == []
        assert load_latency_table(dev, st, fmt, "p10").entries == table.entries
        median = load_latency_table(dev, st, fmt)  # same samples, another statistic
        assert median.entries.keys() == table.entries.keys()
        assert all(median.entries[k] >= v for k, v in table.entries.items())
    whole = pooled([dev.measure(path, runs=50, warmup=10) for _ in range(3)]).stat("p10")
    lut = table.model_ms(model.layers())
    print(f"{fmt}: LUT {lut:.4f} ms, whole model {whole:.4f} ms, ratio {lut / whole:.2f}")
    assert lut > table.overhead_ms and 0.1 <= lut / whole <= 10  # a unit or overhead slip is ×1000 / ×11


def test_measuring_many_layers(tmp_path: Path) -> None:
    layers = [LayerDesc(f"pw{c}_{h}", "conv2d", (c, h, 5), (c, h, 5), (1, 1), activation="relu")
              for c in (8, 16, 24, 32, 48) for h in range(5, 17)]  # 60 distinct layers
    with Store(tmp_path / "s.sqlite") as st:
        table = build_latency_table(OnnxRuntimeCPU(), layers, st, "onnx-int8")
    assert table.measured == 60 and len(table.entries) == 60  # its build time: timings.table_s of a calibration report


def test_a_layer_run_per_tile_costs_each_call() -> None:
    """``LayerDesc.calls`` (the tiles of a super-resolution frame): the table times one call under
    one key, and a layer that runs k times per input costs k of them."""
    from dataclasses import replace

    d = LAYERS[0]
    table = LatencyTable("dev", "1", 1, "onnx-fp32", {d.key(): 0.5}, overhead_ms=0.1)
    tiled = replace(d, calls=6)
    assert tiled.key() == d.key() and tiled in table
    assert table.layer_ms(tiled) == pytest.approx(6 * table.layer_ms(d)) == pytest.approx(2.4)
