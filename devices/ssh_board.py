"""SSH boards (Raspberry Pi 4 and alike): copy the runner and the model over, time it there.

One :class:`SSHBoard` holds one SSH connection (opened lazily, reused for every call, reopened if
it dropped). A measurement is: SFTP the board-side runner (``devices/runner.py``; uploaded once,
named by its content hash) and the artifact (named by its content hash, so it is uploaded once
too) into the remote ``workdir``, then run::

    timeout -k 5 T PYTHON WORKDIR/runner-HASH.py WORKDIR/models/HASH.tflite --runs … --format …

where every path and value is passed through :func:`shlex.quote` — nothing unquoted reaches the
remote shell. The runner prints one JSON line (samples, runtime, board identity: governor,
frequency, CPU model, hostname). ``timeout`` (coreutils) bounds the run on the board itself, so a
hung runner is killed there and does not outlive the call; the client also stops waiting a little
after ``T``.

Why paramiko and not the system ``ssh`` with ControlMaster:

* Distinct, reliable errors. paramiko raises separate exception types for a refused or
  unreachable port, failed authentication, an unknown host key and a changed one; with the
  ``ssh`` binary all of these are exit status 255 plus a stderr text that differs between
  OpenSSH versions and locales and would have to be parsed.
* Same reuse without a side process. A paramiko ``Transport`` opens a new channel per command in
  about a millisecond, which is what ControlMaster buys, without managing a background master,
  its socket path (length limits, stale sockets after a crash) and its lifetime. SFTP rides on the
  same connection.
* Host-key policy in code: known_hosts from the system, the user and the profile, and a
  reject-by-default policy with an explicit opt-in (``accept_unknown_host_key``), instead of
  composing ``-o StrictHostKeyChecking=… -o UserKnownHostsFile=…`` strings.
* Works where no OpenSSH client exists (Windows hosts, slim containers).

The price: ``~/.ssh/config`` support is what :class:`paramiko.SSHConfig` gives — ``HostName``,
``Port``, ``User``, ``IdentityFile``, ``UserKnownHostsFile``, ``ConnectTimeout`` and
``ProxyCommand`` are honoured here; ``ProxyJump``, certificates and security keys (``sk-*``) are not.

Board requirements: a POSIX shell with coreutils ``timeout``; Python >= 3.7 with numpy and a
runtime (``ai_edge_litert``/``tflite_runtime``/``tensorflow`` for ``.tflite``, ``onnxruntime``
for ``.onnx``). Needs the ``ssh`` extra locally (``pip install 'edgenas[ssh]'``).
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import math
import os
import posixpath
import select
import shlex
import socket
import stat
import threading
import time
from pathlib import Path
from typing import Any

from edgenas.devices.base import Measurement
from edgenas.devices.profiles import RUNTIME_FORMATS, SSHSettings
from edgenas.errors import DeviceError
from edgenas.store import file_hash

log = logging.getLogger(__name__)

RUNNER_PATH = Path(__file__).resolve().parent / "runner.py"
# Exit codes of devices/runner.py
EXIT_USAGE, EXIT_NO_RUNTIME, EXIT_BAD_MODEL, EXIT_RUN_FAILED = 2, 3, 4, 5
KILL_GRACE_S = 5  # `timeout -k 5`: SIGKILL this long after SIGTERM
PROBE_TIMEOUT_S = 60.0
SUFFIX_FORMATS = {".onnx": "onnx", ".tflite": "tflite"}


def _import_paramiko() -> Any:
    try:
        import paramiko
    except ImportError as e:
        raise DeviceError(f"paramiko is not installed ({e}); pip install 'edgenas[ssh]'") from None
    return paramiko


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def runner_hash() -> str:
    return hashlib.sha256(RUNNER_PATH.read_bytes()).hexdigest()[:12]


def _check_single_file_onnx(path: Path) -> None:
    """Only the model file is copied to the board: refuse ONNX models with external tensor data."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - onnx is a core dependency
        return
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return  # not parseable here: let the board's runtime report it
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            raise DeviceError(f"{path.name} keeps its weights in external data files; save it as one file"
                              " (onnx.save(onnx.load(path), path, save_as_external_data=False)) to measure it"
                              " on a board")


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: Any) -> None:
        super().__init__(hostname)
        self.hostname = hostname
        self.key = key


def _reject_policy(paramiko: Any) -> Any:
    class RejectUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise _UnknownHostKey(hostname, key)

    return RejectUnknown()


class SSHBoard:
    """A board reached over SSH that runs ``.tflite`` (runtime "litert") or ``.onnx`` models."""

    def __init__(self, name: str, ssh: SSHSettings, runtime: str = "litert", threads: int = 1,
                 max_repeats: int = 2, spread_limit: float = 1.2) -> None:
        if threads < 1:
            raise DeviceError(f"threads must be >= 1, got {threads}")
        if runtime not in ("litert", "onnxruntime"):
            raise DeviceError(f"SSH boards run 'litert' or 'onnxruntime', got {runtime!r}")
        self.name = name
        self.ssh = ssh
        self.runtime = runtime
        self.artifact_format = RUNTIME_FORMATS[runtime]
        self.threads = int(threads)
        self.max_repeats = max_repeats
        self.spread_limit = spread_limit
        self.last_timing: dict[str, float] = {}  # seconds spent in the last measure(): upload, exec, …
        self._client: Any = None
        self._sftp: Any = None
        self._target: dict[str, Any] | None = None
        self._workdir: str | None = None
        self._runner_remote: str | None = None
        self._probe: dict[str, Any] | None = None
        self._lock = threading.RLock()

    # -- connection ------------------------------------------------------------------------

    def target(self) -> dict[str, Any]:
        """Where the profile's host resolves to after ``~/.ssh/config``: hostname, port, user, keys, …"""
        if self._target is not None:
            return self._target
        paramiko = _import_paramiko()
        s = self.ssh
        cfg_path = Path("~/.ssh/config").expanduser()
        entry: dict[str, Any] = {}
        if cfg_path.is_file():
            try:
                entry = dict(paramiko.SSHConfig.from_path(str(cfg_path)).lookup(s.host))
            except Exception as e:
                raise DeviceError(f"cannot read {cfg_path}: {e}") from None
        hostname = str(entry.get("hostname", s.host))
        try:
            port = int(s.port if s.port is not None else entry.get("port", 22))
        except ValueError:
            raise DeviceError(f"bad Port for {s.host!r} in {cfg_path}") from None
        user = s.user or entry.get("user") or getpass.getuser()
        if s.key:
            keys = [str(Path(s.key).expanduser())]
            if not Path(keys[0]).is_file():
                raise DeviceError(f"device {self.name}: SSH key file not found: {keys[0]}")
        else:
            keys = [str(Path(k).expanduser()) for k in entry.get("identityfile", [])]
            keys = [k for k in keys if Path(k).is_file()]
        known = ["/etc/ssh/ssh_known_hosts", str(Path("~/.ssh/known_hosts").expanduser())]
        for k in str(entry.get("userknownhostsfile", "")).split():
            known.append(str(Path(k).expanduser()))
        if s.known_hosts:
            path = Path(s.known_hosts).expanduser()
            if not path.is_file():
                raise DeviceError(f"device {self.name}: known_hosts file not found: {path}")
            known.append(str(path))
        connect_timeout = s.connect_timeout_s
        if "connecttimeout" in entry:
            try:
                connect_timeout = float(entry["connecttimeout"])
            except ValueError:
                pass
        self._target = {"host": s.host, "hostname": hostname, "port": port, "user": str(user), "keys": keys,
                        "known_hosts": known, "proxycommand": entry.get("proxycommand"),
                        "connect_timeout_s": connect_timeout}
        return self._target

    def _where(self) -> str:
        t = self.target()
        alias = f" ({t['host']})" if t["host"] != t["hostname"] else ""
        return f"{t['user']}@{t['hostname']}:{t['port']}{alias}"

    def connect(self) -> Any:
        """The open SSH client (connects on first use or after the connection dropped)."""
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return self._client
                self.close()
            paramiko = _import_paramiko()
            t = self.target()
            client = paramiko.SSHClient()
            for path in t["known_hosts"]:
                if os.path.isfile(path):
                    try:
                        client.load_system_host_keys(path)
                    except Exception as e:  # unreadable or malformed file
                        raise DeviceError(f"cannot read known_hosts file {path}: {e}") from None
            client.set_missing_host_key_policy(
                paramiko.AutoAddPolicy() if self.ssh.accept_unknown_host_key else _reject_policy(paramiko))
            timeout = t["connect_timeout_s"]
            sock = paramiko.ProxyCommand(t["proxycommand"]) if t["proxycommand"] else None
            explicit_key = bool(self.ssh.key)
            try:
                client.connect(
                    t["hostname"], port=t["port"], username=t["user"], key_filename=t["keys"] or None,
                    look_for_keys=not explicit_key, allow_agent=not explicit_key, timeout=timeout,
                    banner_timeout=timeout, auth_timeout=timeout, sock=sock,
                )
            except BaseException as e:
                client.close()
                raise self._connect_error(e, paramiko) from None
            self._client = client
            log.debug("connected to %s", self._where())
            return client

    def _connect_error(self, e: BaseException, paramiko: Any) -> BaseException:
        t = self.target()
        where = self._where()
        pre = f"device {self.name}"
        if isinstance(e, _UnknownHostKey):
            fp = ":".join(f"{b:02x}" for b in e.key.get_fingerprint())
            port_opt = f"-p {t['port']} " if t["port"] != 22 else ""
            return DeviceError(
                f"{pre}: unknown host key for {e.hostname} ({e.key.get_name()} md5 {fp}); verify it and add it"
                f" to ~/.ssh/known_hosts (ssh-keyscan {port_opt}{t['hostname']} >> ~/.ssh/known_hosts) or set"
                f" known_hosts or accept_unknown_host_key = true in [ssh] of the profile")
        if isinstance(e, paramiko.BadHostKeyException):
            return DeviceError(
                f"{pre}: host key of {where} does NOT match known_hosts (board reinstalled, or someone is in"
                f" between); check it and remove the stale entry (ssh-keygen -R {t['hostname']})")
        if isinstance(e, paramiko.PasswordRequiredException):
            return DeviceError(f"{pre}: authentication failed for {where}: the private key is encrypted;"
                               f" load it into ssh-agent or use an unencrypted deploy key")
        if isinstance(e, paramiko.AuthenticationException):
            keys = ", ".join(t["keys"]) or "ssh-agent and default keys"
            return DeviceError(f"{pre}: authentication failed for {where} (tried {keys}); check user and key"
                               f" in [ssh] of the profile or ~/.ssh/config")
        if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
            return DeviceError(f"{pre}: unreachable: connection to {where} refused (is sshd running and the"
                               f" port right?)")
        if isinstance(e, socket.gaierror):
            return DeviceError(f"{pre}: unreachable: cannot resolve host {t['hostname']!r} ({e.strerror});"
                               f" add it to ~/.ssh/config or set host in [ssh] of the profile")
        if isinstance(e, (socket.timeout, TimeoutError)):
            return DeviceError(f"{pre}: unreachable: no answer from {where} within {t['connect_timeout_s']:g} s")
        if isinstance(e, ConnectionRefusedError):
            return DeviceError(f"{pre}: unreachable: connection to {where} refused")
        if isinstance(e, OSError):
            return DeviceError(f"{pre}: unreachable: {where}: {e.strerror or e}")
        if isinstance(e, paramiko.SSHException):
            return DeviceError(f"{pre}: SSH handshake with {where} failed: {_last_line(str(e)) or type(e).__name__}")
        if isinstance(e, KeyboardInterrupt):
            return e
        return DeviceError(f"{pre}: cannot connect to {where}: {type(e).__name__}: {_last_line(str(e))}")

    def close(self) -> None:
        with self._lock:
            if self._sftp is not None:
                try:
                    self._sftp.close()
                except Exception:
                    pass
            if self._client is not None:
                self._client.close()
            self._client = self._sftp = None
            self._runner_remote = None

    def __enter__(self) -> "SSHBoard":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- remote files ----------------------------------------------------------------------

    def _sftp_client(self) -> Any:
        client = self.connect()
        if self._sftp is None:
            try:
                self._sftp = client.open_sftp()
            except Exception as e:
                raise DeviceError(f"device {self.name}: cannot open SFTP on {self._where()}: {_last_line(str(e))}"
                                  " (is the sftp subsystem enabled in sshd_config?)") from None
        return self._sftp

    def workdir(self) -> str:
        """The absolute remote work directory (created if missing)."""
        sftp = self._sftp_client()
        if self._workdir is None:
            wd = self.ssh.workdir
            if wd.startswith("~/"):
                wd = wd[2:]
            if not wd.startswith("/"):
                wd = posixpath.join(sftp.normalize("."), wd)
            self._mkdirs(sftp, posixpath.normpath(wd))
            self._mkdirs(sftp, posixpath.join(wd, "models"))
            self._workdir = posixpath.normpath(wd)
        return self._workdir

    def _mkdirs(self, sftp: Any, path: str) -> None:
        parts = [p for p in path.split("/") if p]
        cur = ""
        for p in parts:
            cur += "/" + p
            try:
                if not stat.S_ISDIR(sftp.stat(cur).st_mode):
                    raise DeviceError(f"device {self.name}: remote path {cur} is not a directory")
            except FileNotFoundError:
                try:
                    sftp.mkdir(cur)
                except OSError as e:
                    raise DeviceError(f"device {self.name}: cannot create {cur} on the board: {e}") from None

    def _put(self, local: Path, remote: str) -> bool:
        """Upload ``local`` to ``remote`` unless a file of the same size is there; True if uploaded."""
        sftp = self._sftp_client()
        size = local.stat().st_size
        try:
            if sftp.stat(remote).st_size == size:
                return False
        except FileNotFoundError:
            pass
        tmp = f"{remote}.part{os.getpid()}"
        try:
            sftp.put(str(local), tmp)
            try:
                sftp.posix_rename(tmp, remote)
            except OSError:
                sftp.rename(tmp, remote)
        except OSError as e:
            raise DeviceError(f"device {self.name}: cannot copy {local.name} to {remote}: {e}") from None
        return True

    def runner_remote(self) -> str:
        if self._runner_remote is None:
            path = posixpath.join(self.workdir(), f"runner-{runner_hash()}.py")
            self._put(RUNNER_PATH, path)
            self._runner_remote = path
        return self._runner_remote

    # -- remote commands -------------------------------------------------------------------

    def command(self, args: list[str], timeout_s: float) -> str:
        """The shell command line that runs the runner with ``args`` (all quoted) under ``timeout``."""
        argv = ["timeout", "-k", str(KILL_GRACE_S), str(max(1, math.ceil(timeout_s))), self.ssh.python,
                self.runner_remote(), *args]
        return " ".join(shlex.quote(a) for a in argv)

    def _exec(self, args: list[str], timeout_s: float) -> tuple[int, str, str]:
        """Run the runner; (exit status, stdout, stderr). Raises DeviceError on timeout."""
        client = self.connect()
        cmd = self.command(args, timeout_s)
        log.debug("%s: %s", self.name, cmd)
        transport = client.get_transport()
        try:
            chan = transport.open_session(timeout=self.target()["connect_timeout_s"])
            chan.exec_command(cmd)
        except Exception as e:
            raise DeviceError(f"device {self.name}: cannot start a command on {self._where()}:"
                              f" {_last_line(str(e)) or type(e).__name__}") from None
        out, err = bytearray(), bytearray()
        deadline = time.monotonic() + timeout_s + KILL_GRACE_S + 5
        try:
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    got = True
                if chan.exit_status_ready() and chan.eof_received and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if chan.closed and not got:
                    break
                if time.monotonic() > deadline:
                    raise DeviceError(self._timeout_message(timeout_s))
                if not got:
                    select.select([chan], [], [], 0.05)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def _timeout_message(self, timeout_s: float) -> str:
        return (f"device {self.name}: runner timed out after {timeout_s:g} s on {self._where()}"
                f" (raise timeout_s in [ssh] of the profile)")

    def _run_runner(self, args: list[str], timeout_s: float, what: str) -> dict[str, Any]:
        status, out, err = self._exec(args, timeout_s)
        payload: dict[str, Any] | None = None
        line = _last_line(out)
        if line.startswith("{"):
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                payload = None
        where = self._where()
        if status in (124, 137):
            raise DeviceError(self._timeout_message(timeout_s))
        if status == 0 and payload is not None and payload.get("ok"):
            return payload
        msg = (payload or {}).get("message") or _last_line(err) or _last_line(out) or "no output"
        if status == EXIT_NO_RUNTIME:
            raise DeviceError(f"device {self.name}: missing runtime on the board: {msg}")
        if status == EXIT_BAD_MODEL:
            raise DeviceError(f"device {self.name}: the board cannot load the model: {msg}")
        if status == 127:
            raise DeviceError(f"device {self.name}: cannot start {self.ssh.python!r} on {where}: {msg}"
                              " (set python in [ssh] of the profile; the board also needs coreutils timeout)")
        if status == 126:
            raise DeviceError(f"device {self.name}: {self.ssh.python!r} is not executable on {where}: {msg}")
        raise DeviceError(f"device {self.name}: runner crashed during {what} on {where} (exit {status}): {msg}")

    # -- Device protocol -------------------------------------------------------------------

    def probe(self, refresh: bool = False) -> dict[str, Any]:
        """The runner's ``--probe`` report: python, runtimes, numpy, board identity (cached)."""
        with self._lock:
            if self._probe is None or refresh:
                self._probe = self._run_runner(["--probe"], min(self.ssh.timeout_s, PROBE_TIMEOUT_S), "probe")
            return self._probe

    def _runtime_for_format(self) -> dict[str, Any]:
        p = self.probe()
        found = p.get("formats", {}).get(self.artifact_format)
        if found is None:
            wanted = ("ai-edge-litert, tflite-runtime or tensorflow" if self.artifact_format == "tflite"
                      else "onnxruntime")
            lacks = "numpy" if not p.get("numpy") else f"a runtime for .{self.artifact_format} models"
            raise DeviceError(
                f"device {self.name}: missing runtime on the board: {p.get('executable', self.ssh.python)} has no"
                f" {lacks} (install numpy and {wanted} there, or set python in [ssh] of the profile)")
        return found

    def check(self) -> None:
        self._runtime_for_format()

    def runtime_version(self) -> str:
        """The board's runtime for this profile's format, e.g. ``"ai_edge_litert 2.3.0"``."""
        r = self._runtime_for_format()
        return f"{r['module']} {r['version']}"

    def info(self) -> dict[str, Any]:
        p = self.probe()
        ident = dict(p.get("identity", {}))
        t = self.target()
        try:
            runtime_version: str | None = self.runtime_version()
        except DeviceError:
            runtime_version = None
        return {
            "name": self.name,
            "adapter": "ssh",
            "runtime": self.runtime,
            "runtime_version": runtime_version,
            "threads": self.threads,
            "artifact_format": self.artifact_format,
            "target": {k: t[k] for k in ("host", "hostname", "port", "user")},
            "python": ident.get("python"),
            "executable": p.get("executable"),
            "numpy": p.get("numpy"),
            "runtimes": p.get("runtimes", {}),
            "governor": ident.get("governor"),
            "cur_freq_khz": ident.get("cur_freq_khz"),
            "identity": ident,
        }

    def measure(self, artifact: str | Path, runs: int = 100, warmup: int = 10,
                threads: int | None = None) -> Measurement:
        if runs < 1:
            raise DeviceError(f"runs must be >= 1, got {runs}")
        path = Path(artifact)
        if not path.is_file():
            raise DeviceError(f"model file not found: {path}")
        fmt = SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is not None and fmt != self.artifact_format:
            raise DeviceError(f"device {self.name} runs .{self.artifact_format} models (runtime {self.runtime}),"
                              f" got {path.name}")
        if self.artifact_format == "onnx":
            _check_single_file_onnx(path)
        threads = int(threads or self.threads)
        with self._lock:
            version = self.runtime_version()  # probes: a missing runtime fails before any upload
            t0 = time.perf_counter()
            remote = posixpath.join(self.workdir(), "models", f"{file_hash(path)}.{self.artifact_format}")
            self._put(path, remote)
            self.runner_remote()  # uploaded (once) here, so that upload_s counts it
            t1 = time.perf_counter()
            args = [remote, "--runs", str(runs), "--warmup", str(max(0, warmup)), "--threads", str(threads),
                    "--format", self.artifact_format, "--max-repeats", str(self.max_repeats),
                    "--spread-limit", str(self.spread_limit)]
            res = self._run_runner(args, self.ssh.timeout_s, f"measurement of {path.name}")
            t2 = time.perf_counter()
        samples = [float(s) for s in res["samples_ms"]]
        self.last_timing = {"upload_s": t1 - t0, "exec_s": t2 - t1, "remote_load_s": float(res.get("load_s", 0.0)),
                            "remote_timed_s": sum(samples) / 1e3}
        ident = dict(res.get("identity", {}))
        ident["ssh_target"] = self._where()
        return Measurement.from_samples(
            samples, warmup=warmup, runs=runs, threads=threads, runtime=str(res.get("runtime", self.runtime)),
            runtime_version=version, device=self.name, device_identity=ident,
        )

    def __repr__(self) -> str:
        return f"SSHBoard(name={self.name!r}, host={self.ssh.host!r}, runtime={self.runtime!r}, threads={self.threads})"
