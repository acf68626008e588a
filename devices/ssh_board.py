"""SSH boards (Raspberry Pi 4 and alike): copy the runner and the model over, time it there.

One :class:`SSHBoard` holds one SSH connection (opened lazily, reused for every call, reopened if
it dropped). A measurement is: SFTP the board-side runner (``devices/runner.py``; uploaded once,
named by its content hash) and the artifacts (named by their content hash, so each is uploaded
once too) into the remote ``workdir``, then run the runner in batch mode::

    timeout -k 5 T PYTHON WORKDIR/runner-HASH.py --batch -

with a JSON manifest on its stdin (model paths, runs, warmup, threads, format, repeat rule,
per-model limit; see ``devices/runner.py``). Every path and value on the command line is passed
through :func:`shlex.quote` — nothing unquoted reaches the remote shell. The runner imports the
runtime once (1–2 s on a Raspberry Pi) and prints one JSON line per model as it finishes
(samples, runtime, board identity: governor, frequency, CPU model, hostname), then a summary.
:meth:`SSHBoard.measure` is :meth:`SSHBoard.measure_many` of one model.

Limits: ``timeout_s`` of the profile is the budget of one model. The runner's watchdog ends the
batch (exit 124) when one model runs longer than that; ``timeout`` (coreutils) bounds the whole
call on the board at ``T = timeout_s × n`` but at most ``max(timeout_s, BATCH_TIMEOUT_CAP_S)``
(2 h; the watchdog cannot fire while a runtime holds the GIL, this can), so a hung runner is
killed there and does not outlive the call; the client also stops waiting a little after ``T``.
Batches are cut into chunks of ``batch_size`` (50) models, one runner call each, so that a dying
board loses at most one chunk's unfinished models.

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

Deployment (``devices/deploy.py``) uses two more calls on the same connection:
:meth:`SSHBoard.upload_dir` mirrors a local folder into the workdir over the one SFTP session
(files whose size and recorded sha256 match are skipped), and :meth:`SSHBoard.run_python` runs
any uploaded Python file with the board's python under the same ``timeout -k 5 T`` wrapping,
quoting and error mapping as the runner (:meth:`SSHBoard._exec` serves both).

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
from typing import Any, Callable, Sequence

from edgenas.devices.base import MeasureManyError, Measurement
from edgenas.devices.profiles import RUNTIME_FORMATS, SSHSettings
from edgenas.errors import DeviceError
from edgenas.store import file_hash

log = logging.getLogger(__name__)

RUNNER_PATH = Path(__file__).resolve().parent / "runner.py"
# Exit codes of devices/runner.py
EXIT_USAGE, EXIT_NO_RUNTIME, EXIT_BAD_MODEL, EXIT_RUN_FAILED = 2, 3, 4, 5
KILL_GRACE_S = 5  # `timeout -k 5`: SIGKILL this long after SIGTERM
PROBE_TIMEOUT_S = 60.0
BATCH_SIZE = 50  # models per runner call in measure_many
BATCH_TIMEOUT_CAP_S = 7200.0  # a batch's `timeout` is timeout_s × n, at most max(timeout_s, this)
SUFFIX_FORMATS = {".onnx": "onnx", ".tflite": "tflite"}
UPLOAD_MANIFEST = ".edgenas-upload.json"  # upload_dir: sha256 of each file of the last upload


def _import_paramiko() -> Any:
    try:
        import paramiko
    except ImportError as e:
        raise DeviceError(f"paramiko is not installed ({e}); pip install 'edgenas[ssh]'") from None
    return paramiko


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def _crash_reason(err: str) -> str:
    """The telling stderr line of a dead runner: Python's "Fatal Python error: …" (the runner enables
    faulthandler) when there is one, else the last line."""
    for line in err.splitlines():
        if line.startswith("Fatal Python error"):
            return line.strip()
    return _last_line(err)


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


def _remote_replace(sftp: Any, tmp: str, dst: str) -> None:
    """Rename an uploaded temporary file into place (atomic where the server supports posix-rename)."""
    try:
        sftp.posix_rename(tmp, dst)
    except OSError:
        sftp.rename(tmp, dst)


def _reject_policy(paramiko: Any) -> Any:
    class RejectUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            raise _UnknownHostKey(hostname, key)

    return RejectUnknown()


class SSHBoard:
    """A board reached over SSH that runs ``.tflite`` (runtime "litert") or ``.onnx`` models."""

    batch_size: int = BATCH_SIZE

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
        # the last measure()/measure_many(): seconds spent uploading and executing, the runner's own load
        # and timed seconds (summed over models), runner calls and models
        self.last_timing: dict[str, float] = {}
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

    def _put(self, local: Path, remote: str, force: bool = False) -> bool:
        """Upload ``local`` to ``remote`` unless a file of the same size is there (``force``: always);
        True if uploaded. The file is written beside ``remote`` and renamed into place."""
        sftp = self._sftp_client()
        size = local.stat().st_size
        if not force:
            try:
                if sftp.stat(remote).st_size == size:
                    return False
            except FileNotFoundError:
                pass
        tmp = f"{remote}.part{os.getpid()}"
        try:
            sftp.put(str(local), tmp)
            _remote_replace(sftp, tmp, remote)
        except OSError as e:
            raise DeviceError(f"device {self.name}: cannot copy {local.name} to {remote}: {e}") from None
        return True

    def runner_remote(self) -> str:
        if self._runner_remote is None:
            path = posixpath.join(self.workdir(), f"runner-{runner_hash()}.py")
            self._put(RUNNER_PATH, path)
            self._runner_remote = path
        return self._runner_remote

    def upload_dir(self, local: str | Path, remote: str) -> dict[str, Any]:
        """Mirror the files under the folder ``local`` into ``remote`` over the one SFTP session.

        ``remote`` is absolute or relative to :meth:`workdir`; folders are created. A file is
        skipped when the remote copy has the same size and the same sha256 as recorded in the
        folder's upload manifest (``UPLOAD_MANIFEST``, written last, so an interrupted upload is
        redone); the others are uploaded beside their name and renamed into place. Executable
        local files are made executable there. Remote files that are not in ``local`` are left
        alone. Returns ``{"remote_dir", "uploaded": [rel paths], "skipped": [rel paths], "bytes"}``
        (bytes uploaded)."""
        root = Path(local)
        if not root.is_dir():
            raise DeviceError(f"not a folder: {root}")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != UPLOAD_MANIFEST)
        rels = [p.relative_to(root).as_posix() for p in files]
        hashes = {rel: file_hash(p, 64) for rel, p in zip(rels, files)}
        with self._lock:
            sftp = self._sftp_client()
            base = remote if remote.startswith("/") else posixpath.join(self.workdir(), remote)
            base = posixpath.normpath(base)
            manifest_path = posixpath.join(base, UPLOAD_MANIFEST)
            try:
                with sftp.open(manifest_path, "r") as f:
                    recorded = json.loads(f.read().decode())
                if not isinstance(recorded, dict):
                    recorded = {}
            except (OSError, ValueError):
                recorded = {}
            sizes: dict[str, int] = {}
            for folder in sorted({posixpath.dirname(r) for r in rels}):
                rdir = posixpath.join(base, folder) if folder else base
                self._mkdirs(sftp, rdir)
                try:
                    for a in sftp.listdir_attr(rdir):
                        sizes[posixpath.join(folder, a.filename) if folder else a.filename] = a.st_size
                except OSError:
                    pass
            uploaded, skipped, nbytes = [], [], 0
            for rel, path in zip(rels, files):
                size = path.stat().st_size
                target = posixpath.join(base, rel)
                if sizes.get(rel) == size and recorded.get(rel) == hashes[rel]:
                    skipped.append(rel)
                    continue
                self._put(path, target, force=True)
                if os.access(path, os.X_OK):
                    try:
                        sftp.chmod(target, 0o755)
                    except OSError:
                        pass
                uploaded.append(rel)
                nbytes += size
            if uploaded or recorded != hashes:
                tmp = f"{manifest_path}.part{os.getpid()}"
                try:
                    with sftp.open(tmp, "w") as f:
                        f.write(json.dumps(hashes, indent=1, sort_keys=True).encode())
                    _remote_replace(sftp, tmp, manifest_path)
                except OSError as e:
                    raise DeviceError(f"device {self.name}: cannot write {manifest_path} on the board: {e}") from None
        return {"remote_dir": base, "uploaded": uploaded, "skipped": skipped, "bytes": nbytes}

    def put_file(self, local: str | Path, remote: str) -> str:
        """Upload one file to ``remote`` (absolute or relative to :meth:`workdir`; its folder is
        created) unless a file of the same size is there; the absolute remote path."""
        path = Path(local)
        if not path.is_file():
            raise DeviceError(f"file not found: {path}")
        with self._lock:
            sftp = self._sftp_client()
            target = posixpath.normpath(remote if remote.startswith("/") else posixpath.join(self.workdir(), remote))
            self._mkdirs(sftp, posixpath.dirname(target))
            self._put(path, target)
        return target

    # -- remote commands -------------------------------------------------------------------

    def command(self, args: list[str], timeout_s: float, script: str | None = None) -> str:
        """The shell command line that runs the runner (or the remote Python file ``script``) with
        ``args`` under ``timeout``; every word is quoted."""
        argv = ["timeout", "-k", str(KILL_GRACE_S), str(max(1, math.ceil(timeout_s))), self.ssh.python,
                script if script is not None else self.runner_remote(), *args]
        return " ".join(shlex.quote(a) for a in argv)

    def _exec(self, args: list[str], timeout_s: float, stdin: bytes | None = None,
              on_line: Callable[[str], None] | None = None, script: str | None = None,
              program: str = "runner") -> tuple[int, str, str]:
        """Run the runner (or the remote Python file ``script``, called ``program`` in messages);
        (exit status, stdout, stderr). Raises DeviceError on timeout.

        ``stdin`` is sent to the runner (then end of file). ``on_line`` gets each stdout line as it
        arrives (and a last unterminated one at the end); an exception it raises ends the call."""
        client = self.connect()
        cmd = self.command(args, timeout_s, script=script)
        log.debug("%s: %s", self.name, cmd)
        transport = client.get_transport()
        try:
            chan = transport.open_session(timeout=self.target()["connect_timeout_s"])
            chan.exec_command(cmd)
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
        except Exception as e:
            raise DeviceError(f"device {self.name}: cannot start a command on {self._where()}:"
                              f" {_last_line(str(e)) or type(e).__name__}") from None
        out, err = bytearray(), bytearray()
        seen = 0  # stdout bytes already handed to on_line
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
                if on_line is not None:
                    while (nl := out.find(b"\n", seen)) >= 0:
                        line, seen = bytes(out[seen:nl]), nl + 1
                        on_line(line.decode(errors="replace"))
                if chan.exit_status_ready() and chan.eof_received and not chan.recv_ready() \
                        and not chan.recv_stderr_ready():
                    break
                if chan.closed and not got:
                    break
                if time.monotonic() > deadline:
                    raise DeviceError(self._timeout_message(timeout_s, program=program))
                if not got:
                    select.select([chan], [], [], 0.05)
            status = chan.recv_exit_status()
        finally:
            chan.close()
        if on_line is not None and seen < len(out):
            on_line(bytes(out[seen:]).decode(errors="replace"))
        return status, out.decode(errors="replace"), err.decode(errors="replace")

    def _timeout_message(self, timeout_s: float, model: str | None = None, program: str = "runner") -> str:
        during = f" measuring {model}" if model else ""
        return (f"device {self.name}: {program} timed out after {timeout_s:g} s on {self._where()}{during}"
                f" (raise timeout_s in [ssh] of the profile)")

    def run_python(self, script: str, args: list[str], timeout_s: float, what: str,
                   stdin: bytes | None = None) -> tuple[int, str, str]:
        """Run the remote Python file ``script`` with ``args`` on the board's python under
        ``timeout -k 5 T`` (every word quoted); (exit status, stdout, stderr) of a run that ended by
        itself with any exit code a Python program gives (0–125).

        The rest raise one-line DeviceErrors, as the runner's calls do: the time limit (``timeout``
        exit 124/137, or no answer a little after it), the python not found or not executable (127,
        126), a crash (killed by a signal); ``what`` names the call in those messages."""
        program = posixpath.basename(script)
        status, out, err = self._exec(list(args), timeout_s, stdin=stdin, script=script, program=program)
        if status in (124, 137):
            raise DeviceError(self._timeout_message(timeout_s, program=program))
        if status in (126, 127) or status < 0 or status > 128:
            raise self._runner_error(status, None, out, err, what, program=program)
        return status, out, err

    def _runner_error(self, status: int, payload: dict[str, Any] | None, out: str, err: str,
                      what: str, program: str = "runner") -> DeviceError:
        """The one-line DeviceError for a runner call that ended with ``status`` (not a success)."""
        where = self._where()
        msg = (payload or {}).get("message") or _crash_reason(err) or _last_line(out) or "no output"
        if status == EXIT_NO_RUNTIME:
            return DeviceError(f"device {self.name}: missing runtime on the board: {msg}")
        if status == EXIT_BAD_MODEL:
            return DeviceError(f"device {self.name}: the board cannot load the model: {msg}")
        if status == 127:
            return DeviceError(f"device {self.name}: cannot start {self.ssh.python!r} on {where}: {msg}"
                               " (set python in [ssh] of the profile; the board also needs coreutils timeout)")
        if status == 126:
            return DeviceError(f"device {self.name}: {self.ssh.python!r} is not executable on {where}: {msg}")
        # paramiko reports -1 when the remote process ended by a signal (it ignores "exit-signal")
        code = "killed by a signal" if status == -1 else f"exit {status}"
        return DeviceError(f"device {self.name}: {program} crashed during {what} on {where} ({code}): {msg}")

    def _run_runner(self, args: list[str], timeout_s: float, what: str) -> dict[str, Any]:
        """Run the runner in a one-line mode (the probe); its JSON payload, or a one-line DeviceError."""
        status, out, err = self._exec(args, timeout_s)
        payload: dict[str, Any] | None = None
        line = _last_line(out)
        if line.startswith("{"):
            try:
                payload = json.loads(line)
            except json.JSONDecodeError:
                payload = None
        if status in (124, 137):
            raise DeviceError(self._timeout_message(timeout_s))
        if status == 0 and payload is not None and payload.get("ok"):
            return payload
        raise self._runner_error(status, payload, out, err, what)

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
        """Time one artifact on the board: :meth:`measure_many` of one."""
        return self.measure_many([artifact], runs=runs, warmup=warmup, threads=threads)[0]

    def batch_timeout(self, n: int) -> float:
        """The ``timeout`` of one runner call for ``n`` models: ``timeout_s`` (the per-model budget)
        × n, at most ``max(timeout_s, BATCH_TIMEOUT_CAP_S)``. The runner's per-model watchdog
        (``timeout_s``) normally ends a hung batch long before this."""
        per = float(self.ssh.timeout_s)
        return min(per * max(1, n), max(per, BATCH_TIMEOUT_CAP_S))

    def measure_many(self, artifacts: Sequence[str | Path], runs: int = 100, warmup: int = 10,
                     threads: int | None = None, on_result: Callable[[int, Measurement], None] | None = None,
                     batch_size: int | None = None) -> list[Measurement]:
        """Time many artifacts on the board, ``batch_size`` (default 50) per runner call.

        All files are checked before anything is uploaded (a missing file, a wrong format or ONNX
        external data raises DeviceError at once, as does a board without the runtime). Each chunk
        is uploaded over the one SFTP session (files already there by hash are skipped) and measured
        by one runner call; ``on_result(index, measurement)`` is called as each model's line
        arrives. Returns the Measurements in input order.

        Failures raise :class:`MeasureManyError` (a DeviceError) whose ``.partial`` holds the
        finished Measurements by input index and ``.errors`` the one-line reasons by index:

        * a model the board cannot load or run does not stop the batch; the error is raised after
          the other models are measured, its message that model's reason;
        * a batch that dies midway (timeout, crash, lost connection) stops at once, with the same
          message single measurements give; the model in flight is in ``.errors``, the models not
          reached are in neither, so a caller can store ``.partial`` and resume with the rest.
        """
        if runs < 1:
            raise DeviceError(f"runs must be >= 1, got {runs}")
        paths = [Path(a) for a in artifacts]
        for path in paths:
            self._validate(path)
        hashes = [file_hash(p) for p in paths]
        threads = int(threads or self.threads)
        size = max(1, int(batch_size or self.batch_size))
        done: dict[int, Measurement] = {}
        errors: dict[int, str] = {}
        timing: dict[str, float] = {"upload_s": 0.0, "exec_s": 0.0, "remote_load_s": 0.0, "remote_timed_s": 0.0,
                                    "runner_calls": 0, "models": len(paths)}
        with self._lock:
            version = self.runtime_version()  # probes: a missing runtime fails before any upload
            try:
                for start in range(0, len(paths), size):
                    chunk = list(range(start, min(start + size, len(paths))))
                    self._measure_chunk(chunk, paths, hashes, runs, max(0, warmup), threads, version, on_result,
                                        done, errors, timing)
            except DeviceError as e:  # the board or the connection failed midway: stop here
                raise MeasureManyError(str(e), done, errors) from None
            finally:
                self.last_timing = timing
        if errors:
            first = min(errors)
            more = f" (and {len(errors) - 1} more of {len(paths)} models)" if len(errors) > 1 else ""
            raise MeasureManyError(errors[first] + more, done, errors)
        return [done[i] for i in range(len(paths))]

    def _validate(self, path: Path) -> None:
        """Refuse a file the board cannot be given: missing, another format, ONNX external data."""
        if not path.is_file():
            raise DeviceError(f"model file not found: {path}")
        fmt = SUFFIX_FORMATS.get(path.suffix.lower())
        if fmt is not None and fmt != self.artifact_format:
            raise DeviceError(f"device {self.name} runs .{self.artifact_format} models (runtime {self.runtime}),"
                              f" got {path.name}")
        if self.artifact_format == "onnx":
            _check_single_file_onnx(path)

    def _upload_models(self, paths: list[Path], hashes: list[str]) -> list[str]:
        """Remote paths of ``paths`` in ``workdir/models``, uploading those not there (one listing)."""
        sftp = self._sftp_client()
        models = posixpath.join(self.workdir(), "models")
        try:
            there = {a.filename: a.st_size for a in sftp.listdir_attr(models)}
        except OSError:
            there = {}
        remotes: list[str] = []
        for path, h in zip(paths, hashes):
            name = f"{h}.{self.artifact_format}"
            remote = posixpath.join(models, name)
            size = path.stat().st_size
            if there.get(name) != size:
                self._put(path, remote)
                there[name] = size
            remotes.append(remote)
        return remotes

    def _measurement(self, res: dict[str, Any], runs: int, warmup: int, threads: int, version: str) -> Measurement:
        """A Measurement from one runner result line, with the board identity and SSH target."""
        ident = dict(res.get("identity", {}))
        ident["ssh_target"] = self._where()
        return Measurement.from_samples(
            [float(s) for s in res["samples_ms"]], warmup=warmup, runs=runs, threads=threads,
            runtime=str(res.get("runtime", self.runtime)), runtime_version=version, device=self.name,
            device_identity=ident,
        )

    def _model_error(self, res: dict[str, Any], path: Path) -> str:
        """The one-line reason for a model the runner reported as failed (the batch went on)."""
        msg = res.get("message") or "no message"
        kind = res.get("error")
        if kind == "bad_model":
            return f"device {self.name}: the board cannot load the model {path.name}: {msg}"
        if kind == "run_failed":
            return f"device {self.name}: inference of {path.name} failed on the board: {msg}"
        return f"device {self.name}: {path.name}: {kind}: {msg}"

    def _measure_chunk(self, chunk: list[int], paths: list[Path], hashes: list[str], runs: int, warmup: int,
                       threads: int, version: str, on_result: Callable[[int, Measurement], None] | None,
                       done: dict[int, Measurement], errors: dict[int, str], timing: dict[str, float]) -> None:
        """One runner call for the models ``chunk`` (input indexes); fills ``done`` and ``errors``.

        Raises DeviceError when the call dies (the model in flight gets that reason in ``errors``)."""
        t0 = time.perf_counter()
        remotes = self._upload_models([paths[i] for i in chunk], [hashes[i] for i in chunk])
        self.runner_remote()  # uploaded (once) here, so that upload_s counts it
        t1 = time.perf_counter()
        timing["upload_s"] += t1 - t0
        manifest = {"format": self.artifact_format, "models": remotes, "runs": runs, "warmup": warmup,
                    "threads": threads, "max_repeats": self.max_repeats, "spread_limit": self.spread_limit,
                    "model_timeout_s": float(self.ssh.timeout_s)}
        summary: dict[str, Any] = {}
        fatal: dict[str, Any] = {}
        other: list[str] = []  # stdout lines that are not runner JSON (shown if the call dies)

        def on_line(line: str) -> None:
            try:
                res = json.loads(line)
            except ValueError:  # not ours (a runtime printing to stdout) or cut off by a crash
                res = None
            if not isinstance(res, dict):
                if line.strip():
                    other.append(line)
                return
            k = res.get("index")
            if isinstance(k, int) and 0 <= k < len(chunk):
                i = chunk[k]
                if res.get("ok"):
                    m = self._measurement(res, runs, warmup, threads, version)
                    done[i] = m
                    timing["remote_load_s"] += float(res.get("load_s", 0.0))
                    timing["remote_timed_s"] += sum(m.samples_ms) / 1e3
                    if on_result is not None:
                        on_result(i, m)
                else:
                    errors[i] = self._model_error(res, paths[i])
            elif res.get("summary"):
                summary.update(res)
            elif res.get("ok") is False:
                fatal.update(res)

        def in_flight() -> int | None:
            return next((i for i in chunk if i not in done and i not in errors), None)

        limit = self.batch_timeout(len(chunk))
        timing["runner_calls"] += 1
        try:
            try:
                status, out, err = self._exec(["--batch", "-"], limit, stdin=json.dumps(manifest).encode(),
                                              on_line=on_line)
            finally:
                timing["exec_s"] += time.perf_counter() - t1
            if status == 0 and summary:
                return
            i = in_flight()
            if i is None and not fatal:  # every model reported; the runner died on its way out
                log.warning("%s: runner ended with status %s after reporting all %d models", self.name, status,
                            len(chunk))
                return
            name = paths[i].name if i is not None else None
            if fatal.get("error") == "timeout":  # the runner's per-model watchdog
                raise DeviceError(self._timeout_message(float(self.ssh.timeout_s), name))
            if status in (124, 137):
                raise DeviceError(self._timeout_message(limit, name))
            what = f"measurement of {name}" if name else f"a batch of {len(chunk)} models"
            raise self._runner_error(status, fatal or None, "\n".join(other), err, what)
        except DeviceError as e:
            i = in_flight()
            if i is not None:
                errors[i] = str(e)
            raise

    def __repr__(self) -> str:
        return f"SSHBoard(name={self.name!r}, host={self.ssh.host!r}, runtime={self.runtime!r}, threads={self.threads})"
