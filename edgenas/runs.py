"""Run directories: ``runs/<task>/<name>/`` with atomic files, an event log and stage state.

Every file is written to a temporary name and renamed into place, and a stage is marked done
only after its outputs exist, so a run killed at any moment resumes from its last finished
stage (and from the last epoch checkpoint inside search and training).
"""

from __future__ import annotations

import fcntl
import json
import time
from pathlib import Path
from typing import Any

from edgenas.errors import EdgenasError
from edgenas.fileio import atomic_write_json, atomic_write_text


class RunDir:
    """One run's directory. Holds an exclusive lock while open so two processes never share it."""

    def __init__(self, path: Path, *, resume: bool, create: bool = True) -> None:
        self.path = path
        if path.exists() and not resume and (path / "state.json").exists():
            raise EdgenasError(f"run directory {path} exists; pass --resume to continue it or choose another --name")
        if not path.exists():
            if not create:
                raise EdgenasError(f"no run directory at {path}")
            if resume:
                raise EdgenasError(f"cannot resume: no run directory at {path}")
        path.mkdir(parents=True, exist_ok=True)
        (path / "checkpoints").mkdir(exist_ok=True)
        self._lock = open(path / ".lock", "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EdgenasError(f"run {path} is in use by another edgenas process") from None
        try:
            self.state: dict[str, Any] = self.read_json("state.json") or {"stages": {}, "created": time.time()}
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def file(self, name: str) -> Path:
        return self.path / name

    def read_json(self, name: str) -> Any:
        p = self.path / name
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            raise EdgenasError(f"corrupt run file {p}") from None

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.path / name, obj)

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)

    def log_event(self, event: str, fields: dict[str, Any]) -> None:
        with open(self.path / "events.jsonl", "a") as f:
            f.write(json.dumps({"t": round(time.time(), 3), "event": event, **fields}, default=str) + "\n")

    # ---- stages ---------------------------------------------------------------------------
    def done(self, stage: str) -> bool:
        return stage in self.state["stages"]

    def result(self, stage: str) -> Any:
        return self.state["stages"][stage]["result"]

    def mark(self, stage: str, result: Any, seconds: float) -> None:
        self.state["stages"][stage] = {"result": result, "seconds": round(seconds, 3), "at": time.time()}
        self.write_json("state.json", self.state)
