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
    model = make_dscnn(channels=64, blocks=4)
    path = export_onnx_fp32(model, (1, 1, 49, 10), tmp_path / "m.onnx", {})
    if fmt == "onnx-int8":
        calib = np.random.default_rng(0).standard_normal((64, 1, 49, 10)).astype(np.float32)
        path = quantize_int8(path, tmp_path / "m8.onnx", calib, {})
    dev = OnnxRuntimeCPU()
    with Store(tmp_path / "s.sqlite") as st:
        table = build_latency_table(dev, model.layers(), st, fmt, runs=50, warmup=5)
    whole = dev.measure(path, runs=100, warmup=10).median_ms
    ratio = table.model_ms(model.layers()) / whole
    print(f"{fmt}: LUT {table.model_ms(model.layers()):.4f} ms, whole model {whole:.4f} ms, ratio {ratio:.2f}")
    assert 0.3 <= ratio <= 3.0


def test_measuring_many_layers_is_fast(tmp_path: Path) -> None:
    import time

    layers = [LayerDesc(f"pw{c}_{h}", "conv2d", (c, h, 5), (c, h, 5), (1, 1), activation="relu")
              for c in (8, 16, 24, 32, 48) for h in range(5, 17)]  # 60 distinct layers
    with Store(tmp_path / "s.sqlite") as st:
        t0 = time.perf_counter()
        table = build_latency_table(OnnxRuntimeCPU(), layers, st, "onnx-int8")
        elapsed = time.perf_counter() - t0
    assert table.measured == 60
    print(f"60 int8 layers measured in {elapsed:.2f} s")
    assert elapsed < 20  # ≈ 0.3–1 s here; ~1000 layers must stay well under a minute
