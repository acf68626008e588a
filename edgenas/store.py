"""The measurement store: one SQLite database (WAL mode) shared by calibration, search and runs.

Every latency measurement is keyed by (device, runtime version, threads, artifact key), where the
artifact key is the content hash of the measured file (:func:`file_hash`). Rows of kind ``layer``
also carry the LayerDesc key (``layer_key``) so that a per-layer latency table can be read back
with :meth:`Store.latency_table`.

Each write is its own transaction, so a killed process leaves the database consistent; several
processes may read and write at once (WAL + busy timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from edgenas.devices.base import Measurement
from edgenas.errors import ConfigError

SCHEMA_VERSION = 1
KINDS = ("model", "layer", "overhead", "chain", "frontend")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS measurements (
    device TEXT NOT NULL,
    runtime TEXT NOT NULL,
    runtime_version TEXT NOT NULL,
    threads INTEGER NOT NULL,
    artifact_key TEXT NOT NULL,
    spec_hash TEXT,
    layer_key TEXT,
    kind TEXT NOT NULL,
    fmt TEXT NOT NULL,
    median_ms REAL NOT NULL,
    p90_ms REAL NOT NULL,
    warmup INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    samples_json TEXT NOT NULL,
    device_identity_json TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (device, runtime_version, threads, artifact_key)
);
CREATE INDEX IF NOT EXISTS measurements_table
    ON measurements (device, runtime_version, threads, fmt, kind);
CREATE INDEX IF NOT EXISTS measurements_spec ON measurements (spec_hash);
"""


def default_cache_dir() -> Path:
    """``$EDGENAS_CACHE`` if set, else ``~/.cache/edgenas``: generated data, features, predictors."""
    env = os.environ.get("EDGENAS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgenas"


def default_store_path() -> Path:
    """``$EDGENAS_STORE``, else ``<cache dir>/edgenas.sqlite``."""
    explicit = os.environ.get("EDGENAS_STORE")
    if explicit:
        return Path(explicit).expanduser()
    return default_cache_dir() / "edgenas.sqlite"


def file_hash(path: str | Path, n: int = 16) -> str:
    """Content hash of a file (sha256, first ``n`` hex digits): the artifact key."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:n]


class Store:
    """SQLite store of measurements. ``Store(path)`` creates the file and its schema if needed."""

    def __init__(self, path: str | Path | None = None, timeout_s: float = 30.0) -> None:
        self.path = Path(path) if path is not None else default_store_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit; transactions are explicit (BEGIN IMMEDIATE … COMMIT).
            self._conn = sqlite3.connect(str(self.path), timeout=timeout_s, isolation_level=None)
            self._conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._init_schema()
        except (OSError, sqlite3.Error) as e:
            raise ConfigError(f"cannot open measurement store {self.path}: {e}") from None

    # -- lifecycle -------------------------------------------------------------------------

    def _init_schema(self) -> None:
        with self._transaction():
            for stmt in _SCHEMA.split(";"):
                if stmt.strip():
                    self._conn.execute(stmt)
            row = self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            if row is None:
                self._conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row[0]) != SCHEMA_VERSION:
                raise ConfigError(
                    f"store {self.path} has schema version {row[0]}, this edgenas expects {SCHEMA_VERSION}"
                )

    def _transaction(self) -> "_Tx":
        return _Tx(self._conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def journal_mode(self) -> str:
        return str(self._conn.execute("PRAGMA journal_mode").fetchone()[0])

    def schema_version(self) -> int:
        return int(self._conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])

    # -- measurements ----------------------------------------------------------------------

    def get_measurement(
        self, device: str, runtime_version: str, threads: int, artifact_key: str
    ) -> Measurement | None:
        row = self._conn.execute(
            "SELECT median_ms, p90_ms, samples_json, warmup, runs, threads, runtime, runtime_version,"
            " device, device_identity_json FROM measurements"
            " WHERE device=? AND runtime_version=? AND threads=? AND artifact_key=?",
            (device, runtime_version, int(threads), artifact_key),
        ).fetchone()
        return _row_to_measurement(row) if row else None

    def put_measurement(
        self,
        artifact_key: str,
        m: Measurement,
        *,
        kind: str,
        fmt: str,
        spec_hash: str | None = None,
        layer_key: str | None = None,
    ) -> None:
        """Insert or replace the measurement of ``artifact_key`` on ``m``'s device/runtime/threads."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        values = (
            m.device, m.runtime, m.runtime_version, int(m.threads), artifact_key, spec_hash, layer_key,
            kind, fmt, float(m.median_ms), float(m.p90_ms), int(m.warmup), int(m.runs),
            json.dumps([float(s) for s in m.samples_ms]),
            json.dumps(m.device_identity, sort_keys=True, default=str), time.time(),
        )
        with self._transaction():
            self._conn.execute(
                "INSERT OR REPLACE INTO measurements (device, runtime, runtime_version, threads,"
                " artifact_key, spec_hash, layer_key, kind, fmt, median_ms, p90_ms, warmup, runs,"
                " samples_json, device_identity_json, created)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )

    def put_layer(self, layer_key: str, artifact_key: str, m: Measurement, fmt: str) -> None:
        """Store the measurement of one layer's micro-model (kind='layer')."""
        self.put_measurement(artifact_key, m, kind="layer", fmt=fmt, layer_key=layer_key)

    def latency_table(self, device: str, runtime_version: str, threads: int, fmt: str,
                      stat: str = "median") -> dict[str, float]:
        """LayerDesc key → latency statistic ``stat`` (Measurement.stat) in ms for every layer
        measured on this device/runtime/threads/fmt."""
        rows = self._conn.execute(
            "SELECT layer_key, median_ms, p90_ms, samples_json, warmup, runs, threads, runtime, runtime_version,"
            " device, device_identity_json FROM measurements WHERE device=? AND runtime_version=?"
            " AND threads=? AND fmt=? AND kind='layer' AND layer_key IS NOT NULL ORDER BY created",
            (device, runtime_version, int(threads), fmt),
        ).fetchall()
        return {str(r[0]): _row_to_measurement(r[1:]).stat(stat) for r in rows}

    def overhead(self, device: str, runtime_version: str, threads: int, fmt: str) -> Measurement | None:
        """The latest per-call overhead measurement (kind='overhead') for this device/runtime/fmt."""
        row = self._conn.execute(
            "SELECT median_ms, p90_ms, samples_json, warmup, runs, threads, runtime, runtime_version,"
            " device, device_identity_json FROM measurements WHERE device=? AND runtime_version=?"
            " AND threads=? AND fmt=? AND kind='overhead' ORDER BY created DESC LIMIT 1",
            (device, runtime_version, int(threads), fmt),
        ).fetchone()
        return _row_to_measurement(row) if row else None

    def spec_measurements(self, device: str, runtime_version: str, threads: int, fmt: str,
                          kind: str = "chain") -> dict[str, Measurement]:
        """ArchSpec hash → latest measurement of that spec's network (``kind``) in ``fmt``: what
        calibration and latency models reuse without rebuilding the artifact."""
        rows = self._conn.execute(
            "SELECT spec_hash, median_ms, p90_ms, samples_json, warmup, runs, threads, runtime, runtime_version,"
            " device, device_identity_json FROM measurements WHERE device=? AND runtime_version=? AND threads=?"
            " AND fmt=? AND kind=? AND spec_hash IS NOT NULL ORDER BY created",
            (device, runtime_version, int(threads), fmt, kind),
        ).fetchall()
        return {str(r[0]): _row_to_measurement(r[1:]) for r in rows}

    def measurements(self, **where: Any) -> list[dict[str, Any]]:
        """All rows matching the given column values (e.g. ``spec_hash=…``), as dicts."""
        allowed = {"device", "runtime", "runtime_version", "threads", "artifact_key", "spec_hash",
                   "layer_key", "kind", "fmt"}
        bad = set(where) - allowed
        if bad:
            raise ValueError(f"unknown columns {sorted(bad)}")
        clause = " AND ".join(f"{k}=?" for k in where) or "1=1"
        cur = self._conn.execute(f"SELECT * FROM measurements WHERE {clause} ORDER BY created", tuple(where.values()))
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])


class _Tx:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (or ``ROLLBACK`` on error)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.conn.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _row_to_measurement(row: tuple[Any, ...]) -> Measurement:
    median, p90, samples, warmup, runs, threads, runtime, version, device, identity = row
    return Measurement(
        median_ms=float(median), p90_ms=float(p90), samples_ms=tuple(json.loads(samples)),
        warmup=int(warmup), runs=int(runs), threads=int(threads), runtime=str(runtime),
        runtime_version=str(version), device=str(device), device_identity=json.loads(identity),
    )
