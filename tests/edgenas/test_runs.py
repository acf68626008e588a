"""Run directories: refusal without --resume, exclusive lock, atomic files, stage state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgenas.errors import EdgenasError
from edgenas.runs import RunDir, atomic_write_json, atomic_write_text


def test_new_run_dir_layout(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "kws" / "a"
    with RunDir(path, resume=False) as run:
        assert path.is_dir() and (path / "checkpoints").is_dir() and (path / ".lock").exists()
        assert run.state["stages"] == {} and run.file("x.json") == path / "x.json"
        assert not run.done("data")


def test_stage_marking_persists(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with RunDir(path, resume=False) as run:
        run.mark("data", {"clips": 3}, 1.23456)
        assert run.done("data") and run.result("data") == {"clips": 3}
        assert not run.done("search")
    state = json.loads((path / "state.json").read_text())
    assert state["stages"]["data"]["result"] == {"clips": 3}
    assert state["stages"]["data"]["seconds"] == 1.235
    with RunDir(path, resume=True) as run:
        assert run.done("data") and run.result("data") == {"clips": 3}
        run.mark("search", {"derived": "abc"}, 2.0)
    with RunDir(path, resume=True) as run:
        assert list(run.state["stages"]) == ["data", "search"]


def test_existing_run_refused_without_resume(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with RunDir(path, resume=False) as run:
        run.mark("config", {}, 0.0)
    with pytest.raises(EdgenasError) as ei:
        RunDir(path, resume=False)
    assert "exists; pass --resume" in str(ei.value) and str(path) in str(ei.value)
    # a directory without any finished stage (e.g. killed before the first one) may be reused
    empty = tmp_path / "empty"
    empty.mkdir()
    RunDir(empty, resume=False).close()


def test_resume_and_create_need_an_existing_dir(tmp_path: Path) -> None:
    with pytest.raises(EdgenasError, match="cannot resume: no run directory"):
        RunDir(tmp_path / "nope", resume=True)
    with pytest.raises(EdgenasError, match="no run directory at"):
        RunDir(tmp_path / "nope2", resume=False, create=False)
    assert not (tmp_path / "nope").exists() and not (tmp_path / "nope2").exists()


def test_lock_prevents_a_second_open(tmp_path: Path) -> None:
    path = tmp_path / "r"
    first = RunDir(path, resume=False)
    try:
        with pytest.raises(EdgenasError, match="in use by another edgenas process"):
            RunDir(path, resume=True)
    finally:
        first.close()
    RunDir(path, resume=True).close()  # free again once closed


def test_lock_holds_across_processes(tmp_path: Path) -> None:
    path = tmp_path / "r"
    code = ("import sys; from pathlib import Path; from edgenas.runs import RunDir\n"
            "from edgenas.errors import EdgenasError\n"
            "try:\n    RunDir(Path(sys.argv[1]), resume=True)\nexcept EdgenasError as e:\n"
            "    print(e); sys.exit(7)\n")
    with RunDir(path, resume=False):
        p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
        assert p.returncode == 7 and "in use" in p.stdout
    p = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr


def test_lock_released_when_the_block_raises(tmp_path: Path) -> None:
    path = tmp_path / "r"
    with pytest.raises(KeyboardInterrupt):
        with RunDir(path, resume=False):
            raise KeyboardInterrupt
    RunDir(path, resume=True).close()


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "dir" / "a.json"
    atomic_write_json(target, {"b": 2, "a": Path("/x")})
    assert json.loads(target.read_text()) == {"a": "/x", "b": 2}
    atomic_write_text(tmp_path / "t.md", "hello")
    atomic_write_text(tmp_path / "t.md", "world")
    assert (tmp_path / "t.md").read_text() == "world"
    with RunDir(tmp_path / "r", resume=False) as run:
        run.write_json("x.json", [1])
        run.write_text("y.txt", "y")
        run.mark("s", 1, 0)
    leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in (tmp_path / "deep" / "dir").iterdir()) == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "state.json"
    atomic_write_json(target, {"v": 1})

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}


def test_read_json_and_events(tmp_path: Path) -> None:
    with RunDir(tmp_path / "r", resume=False) as run:
        assert run.read_json("missing.json") is None
        run.write_json("ok.json", {"a": 1})
        assert run.read_json("ok.json") == {"a": 1}
        run.file("bad.json").write_text("{")
        with pytest.raises(EdgenasError, match="corrupt run file"):
            run.read_json("bad.json")
        run.log_event("stage.start", {"stage": "data"})
        run.log_event("search.epoch", {"epoch": 1, "path": Path("/p")})
    lines = [json.loads(x) for x in (tmp_path / "r" / "events.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["stage.start", "search.epoch"]
    assert lines[1]["epoch"] == 1 and lines[1]["path"] == "/p" and lines[0]["t"] > 0


def _corrupt_run(tmp_path: Path) -> Path:
    path = tmp_path / "r"
    with RunDir(path, resume=False) as run:
        run.mark("config", {}, 0)
    (path / "state.json").write_text('{"stages": ')
    return path


def test_corrupt_state_is_a_one_line_error(tmp_path: Path) -> None:
    path = _corrupt_run(tmp_path)
    with pytest.raises(EdgenasError, match="corrupt run file") as ei:
        RunDir(path, resume=True)
    assert str(path / "state.json") in str(ei.value) and "\n" not in str(ei.value)


def test_failed_open_releases_the_lock(tmp_path: Path) -> None:
    path = _corrupt_run(tmp_path)
    with pytest.raises(EdgenasError, match="corrupt run file") as ei:
        RunDir(path, resume=True)
    # the error (and its traceback) is still alive, as in a caller that reports it and goes on
    assert ei.value is not None
    (path / "state.json").write_text('{"stages": {}}')  # repaired by the user
    RunDir(path, resume=True).close()
