from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from edgenas.devices.base import Measurement
from edgenas.store import SCHEMA_VERSION, Store, default_store_path, file_hash


def meas(median: float = 1.0, *, device: str = "dev", version: str = "1.0", threads: int = 1) -> Measurement:
    return Measurement.from_samples(
        [median * 0.9, median, median * 1.1], warmup=2, runs=3, threads=threads, runtime="onnxruntime",
        runtime_version=version, device=device, device_identity={"cpu": "test cpu", "hostname": "h"},
    )


def test_round_trip_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "s.sqlite"
    with Store(path) as st:
        assert st.journal_mode() == "wal"
        assert st.schema_version() == SCHEMA_VERSION
        m = meas(2.0)
        st.put_measurement("abc", m, kind="model", fmt="onnx-fp32", spec_hash="spec1")
        got = st.get_measurement("dev", "1.0", 1, "abc")
        assert got == m
        assert got.samples_ms == m.samples_ms and got.device_identity == m.device_identity
        assert st.get_measurement("dev", "1.0", 1, "nope") is None
        rows = st.measurements(spec_hash="spec1")
        assert len(rows) == 1 and rows[0]["kind"] == "model" and rows[0]["fmt"] == "onnx-fp32"
    # reopen: data persisted, schema not re-created
    with Store(path) as st:
        assert st.get_measurement("dev", "1.0", 1, "abc") == m
        assert st.count() == 1


def test_upsert_replaces(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        st.put_measurement("abc", meas(1.0), kind="model", fmt="onnx-fp32")
        st.put_measurement("abc", meas(3.0), kind="model", fmt="onnx-fp32")
        assert st.count() == 1
        assert st.get_measurement("dev", "1.0", 1, "abc").median_ms == pytest.approx(3.0)


def test_runtime_versions_and_threads_never_mix(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        st.put_measurement("abc", meas(1.0, version="1.0", threads=1), kind="model", fmt="onnx-fp32")
        st.put_measurement("abc", meas(2.0, version="2.0", threads=1), kind="model", fmt="onnx-fp32")
        st.put_measurement("abc", meas(3.0, version="1.0", threads=4), kind="model", fmt="onnx-fp32")
        st.put_measurement("abc", meas(4.0, device="other"), kind="model", fmt="onnx-fp32")
        assert st.count() == 4
        assert st.get_measurement("dev", "1.0", 1, "abc").median_ms == pytest.approx(1.0)
        assert st.get_measurement("dev", "2.0", 1, "abc").median_ms == pytest.approx(2.0)
        assert st.get_measurement("dev", "1.0", 4, "abc").median_ms == pytest.approx(3.0)
        assert st.get_measurement("other", "1.0", 1, "abc").median_ms == pytest.approx(4.0)
        assert st.get_measurement("dev", "2.0", 4, "abc") is None


def test_latency_table_and_overhead(tmp_path: Path) -> None:
    with Store(tmp_path / "s.sqlite") as st:
        st.put_layer('["conv2d",1]', "a1", meas(0.5), "onnx-fp32")
        st.put_layer('["conv2d",2]', "a2", meas(0.7), "onnx-fp32")
        st.put_layer('["conv2d",1]', "a3", meas(0.9), "onnx-int8")
        st.put_layer('["conv2d",1]', "a1", meas(0.6, threads=2), "onnx-fp32")
        st.put_measurement("e", meas(0.01), kind="overhead", fmt="onnx-fp32")
        st.put_measurement("m", meas(5.0), kind="model", fmt="onnx-fp32")
        assert st.latency_table("dev", "1.0", 1, "onnx-fp32") == {'["conv2d",1]': 0.5, '["conv2d",2]': 0.7}
        assert st.latency_table("dev", "1.0", 1, "onnx-int8") == {'["conv2d",1]': 0.9}
        assert st.latency_table("dev", "1.0", 2, "onnx-fp32") == {'["conv2d",1]': 0.6}
        assert st.latency_table("dev", "2.0", 1, "onnx-fp32") == {}
        assert st.overhead("dev", "1.0", 1, "onnx-fp32").median_ms == pytest.approx(0.01)
        assert st.overhead("dev", "1.0", 1, "onnx-int8") is None
        with pytest.raises(ValueError):
            st.put_measurement("x", meas(), kind="bogus", fmt="onnx-fp32")


def _writer(path: str, prefix: str, n: int) -> None:
    st = Store(path)
    for i in range(n):
        st.put_measurement(f"{prefix}{i}", meas(float(i + 1)), kind="model", fmt="onnx-fp32")
    st.close()


def test_concurrent_writers_from_two_processes(tmp_path: Path) -> None:
    path = str(tmp_path / "s.sqlite")
    Store(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, p, 150)) for p in ("a", "b")]
    for p in procs:
        p.start()
    _writer(path, "c", 150)  # and this process at the same time
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store(path) as st:
        assert st.count() == 450
        assert st.get_measurement("dev", "1.0", 1, "b149").median_ms == pytest.approx(150.0)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


def test_default_store_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGENAS_STORE", raising=False)
    monkeypatch.setenv("EDGENAS_CACHE", str(tmp_path / "cache"))
    assert default_store_path() == tmp_path / "cache" / "edgenas.sqlite"
    monkeypatch.setenv("EDGENAS_STORE", str(tmp_path / "x.sqlite"))
    assert default_store_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("EDGENAS_STORE")
    monkeypatch.delenv("EDGENAS_CACHE")
    assert default_store_path() == Path.home() / ".cache" / "edgenas" / "edgenas.sqlite"


def test_file_hash(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"hello")
    b.write_bytes(b"hello!")
    assert len(file_hash(a)) == 16
    assert file_hash(a) == file_hash(a) and file_hash(a) != file_hash(b)


def test_killed_writer_leaves_db_consistent(tmp_path: Path) -> None:
    import time

    path = str(tmp_path / "s.sqlite")
    Store(path).close()
    ctx = mp.get_context("spawn")
    p = ctx.Process(target=_writer, args=(path, "k", 100_000))
    p.start()
    deadline = time.time() + 30
    with Store(path) as st:
        while st.count() < 20 and time.time() < deadline:
            time.sleep(0.05)
    p.kill()
    p.join(10)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with Store(path) as st:
        n = st.count()
        assert n >= 20
        for row in st.measurements(kind="model"):  # every committed row is whole
            m = st.get_measurement(row["device"], row["runtime_version"], row["threads"], row["artifact_key"])
            assert m is not None and len(m.samples_ms) == 3


def test_unusable_path_is_one_line_error(tmp_path: Path) -> None:
    from edgenas.errors import ConfigError

    not_a_db = tmp_path / "x.sqlite"
    not_a_db.write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(ConfigError, match="cannot open measurement store"):
        Store(not_a_db)
