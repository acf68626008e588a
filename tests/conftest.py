"""Shared fixtures for the core (edgenas/) and CLI tests.

Nothing here is autouse: the tests of other folders are unaffected. The helpers build a tiny
Free Spoken Digit Dataset layout of synthetic tones (one frequency per digit, a small shift per
speaker) and run the real CLI once per session so that several test modules can inspect one
finished run instead of paying for their own.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
import soundfile as sf

# pytest puts tests/ on sys.path; there tests/edgenas (test folder, no __init__.py) is found as a
# namespace package "edgenas" before the editable install's finder is asked, so a test module that
# is the first to import edgenas got that empty namespace. Import the real package first.
_tests_dir = str(Path(__file__).resolve().parent)
_saved_path = list(sys.path)
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _tests_dir]
import edgenas  # noqa: E402,F401

sys.path[:] = _saved_path

# triton (loaded lazily by torch._dynamo on the first torch.optim.Adam) segfaults when its native
# library loads after TensorFlow's; edgenas imports TensorFlow only through keras_build.import_tf,
# which loads triton first. Some tests import TensorFlow directly, so load triton first here too.
with contextlib.suppress(Exception):
    import triton  # noqa: F401

TONE_RATE = 8000
TONE_SECONDS = 0.5
DIGITS = (0, 1, 2)
SPEAKERS = ("s0", "s1", "s2")
CLIPS = 8

# the `--set` overrides that make a search take seconds (1 data option, 2 widths, 2 blocks)
TINY_SETS = [
    "--set", "space.widths=8,16", "--set", "space.n_blocks=2", "--set", "space.n_mfcc=10",
    "--set", "space.windows=40/20", "--set", "measure.runs=20", "--set", "measure.lut_runs=5",
]


def write_tone_fsdd(root: Path, digits: tuple[int, ...] = DIGITS, speakers: tuple[str, ...] = SPEAKERS,
                    clips: int = CLIPS, rate: int = TONE_RATE, seconds: float = TONE_SECONDS) -> Path:
    """``root/recordings/<digit>_<speaker>_<n>.wav``: a noisy tone per digit (400, 800, 1200 Hz …)."""
    rec = root / "recordings"
    rec.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(rate * seconds)) / rate
    for d in digits:
        for si, s in enumerate(speakers):
            for i in range(clips):
                f = 400.0 * (d + 1) * (1 + 0.03 * si) + rng.uniform(-10, 10)
                x = 0.3 * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(len(t))
                sf.write(rec / f"{d}_{s}_{i}.wav", x.astype(np.float32), rate, subtype="PCM_16")
    return root


@pytest.fixture
def tiny_sets() -> list[str]:
    return list(TINY_SETS)


@pytest.fixture
def make_fsdd() -> Callable[..., Path]:
    return write_tone_fsdd


@pytest.fixture(scope="session")
def tone_fsdd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only tiny FSDD (3 digits × 3 speakers × 8 clips, 8 kHz, 0.5 s) shared by the session."""
    return write_tone_fsdd(tmp_path_factory.mktemp("tone-fsdd"))


@pytest.fixture(scope="session")
def shared_env_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A feature cache and a measurement store shared by the end-to-end tests (never ~/.cache)."""
    base = tmp_path_factory.mktemp("edgenas-shared")
    return {"EDGENAS_CACHE": base / "cache", "EDGENAS_STORE": base / "store.sqlite"}


@pytest.fixture
def shared_env(shared_env_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    for k, v in shared_env_dirs.items():
        monkeypatch.setenv(k, str(v))
    return shared_env_dirs


@pytest.fixture
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    dirs = {"EDGENAS_CACHE": tmp_path / "edgenas-cache", "EDGENAS_STORE": tmp_path / "edgenas-store.sqlite"}
    for k, v in dirs.items():
        monkeypatch.setenv(k, str(v))
    return dirs


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: torch's intra-op threads only spin against each other
    (the search tests ran 10x slower with 2 threads under load), so these tests use one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread_per_module() -> Iterator[None]:
    with one_torch_thread():
        yield


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


def run_cli(argv: list[str]) -> CliResult:
    """``edgenas.cli.main(argv)`` in this process with stdout/stderr captured."""
    from edgenas.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli() -> Callable[[list[str]], CliResult]:
    return run_cli


def run_cli_in(base: Path, argv: list[str]) -> CliResult:
    """:func:`run_cli` with the cache and the SQLite store under ``base`` (for module-scoped
    fixtures, which cannot use the function-scoped ``isolated_env``)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGENAS_CACHE", str(base / "cache"))
        mp.setenv("EDGENAS_STORE", str(base / "store.sqlite"))
        return run_cli(argv)


@pytest.fixture(scope="session")
def cli_in() -> Callable[[Path, list[str]], CliResult]:
    return run_cli_in


@dataclass
class FinishedRun:
    argv: list[str]
    runs_dir: Path
    name: str
    path: Path
    result: CliResult


@pytest.fixture(scope="session")
def finished_run(tone_fsdd: Path, shared_env_dirs: dict[str, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    """One real end-to-end ``edgenas search`` (latency and RAM budgets) through ``cli.main``.

    Read-only for its users: tests that change a run copy its directory first.
    """
    runs_dir = tmp_path_factory.mktemp("runs")
    argv = ["search", "--data", str(tone_fsdd), "--test-speakers", "s2", "--search-epochs", "2", "--epochs", "3",
            "--max-ram-kb", "512", "--max-latency-ms", "5", "--runs-dir", str(runs_dir), "--name", "e2e", "--json",
            *TINY_SETS]
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        for k, v in shared_env_dirs.items():
            mp.setenv(k, str(v))
        res = run_cli(argv)
    assert res.code == 0, res.err[-3000:]
    return FinishedRun(argv, runs_dir, "e2e", runs_dir / "kws" / "e2e", res)
