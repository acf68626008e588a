"""A stand-in SSH board for tests: OpenSSH's sshd on 127.0.0.1 at a free port, throwaway keys.

``StandInBoard.start(tmp)`` writes a host key, a client key (authorized through
``AuthorizedKeysFile`` in ``tmp``), an ``sshd_config`` and a ``known_hosts`` holding the host key
(``[127.0.0.1]:PORT …``), starts ``sshd -D -e -f …`` and waits until the port accepts. The board's
user is the current user and its Python is this interpreter (``sys.executable``), so the board has
the same runtimes as the tests. :meth:`StandInBoard.profile` writes a device profile TOML for it.
:meth:`StandInBoard.stop` stops sshd by its PID.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SSHD = "/usr/sbin/sshd"


def sshd_missing_reason() -> str | None:
    """Why the stand-in board cannot run here, or None."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not installed (apt-get install openssh-server)"
    if shutil.which("ssh-keygen") is None:
        return "ssh-keygen not installed (apt-get install openssh-client)"
    try:
        import paramiko  # noqa: F401
    except ImportError:
        return "paramiko not installed (pip install 'edgenas[ssh]')"
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgenas-test", "-f", str(path)],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return path


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class StandInBoard:
    root: Path
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key_line: str
    python: str = field(default_factory=lambda: sys.executable)
    host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def start(cls, root: Path, timeout_s: float = 10.0) -> "StandInBoard":
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        host_key = keygen(root / "host_ed25519")
        client_key = keygen(root / "client_ed25519")
        shutil.copy(root / "client_ed25519.pub", root / "authorized_keys")
        port = free_port()
        pub = (root / "host_ed25519.pub").read_text().split()
        host_key_line = f"[127.0.0.1]:{port} {pub[0]} {pub[1]}"
        known_hosts = root / "known_hosts"
        known_hosts.write_text(host_key_line + "\n")
        config = root / "sshd_config"
        config.write_text("\n".join([
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            f"PidFile {root / 'sshd.pid'}",
            "StrictModes no",
            "UsePAM no",
            "PermitRootLogin yes",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "Subsystem sftp internal-sftp",
            "MaxStartups 100",
            "MaxSessions 100",
            "LogLevel ERROR",
            "",
        ]))
        # sshd refuses to start without its privilege-separation directory.
        Path("/run/sshd").mkdir(mode=0o755, parents=True, exist_ok=True)
        log = open(root / "sshd.log", "wb")
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        log.close()
        board = cls(root=root, port=port, user=getpass.getuser(), client_key=client_key, known_hosts=known_hosts,
                    host_key_line=host_key_line, proc=proc)
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"sshd exited ({proc.returncode}): {(root / 'sshd.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    board.stop()
                    raise RuntimeError(f"sshd did not listen on port {port} within {timeout_s} s")
                time.sleep(0.05)
        return board

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def profile(self, name: str = "standin", runtime: str = "onnxruntime", threads: int = 1,
                path: Path | None = None, **ssh: Any) -> Path:
        """Write a profile TOML for this board; ``ssh`` keys replace the [ssh] defaults."""
        values: dict[str, Any] = {
            "host": self.host, "port": self.port, "user": self.user, "key": str(self.client_key),
            "python": self.python, "workdir": str(self.root / "work"), "known_hosts": str(self.known_hosts),
            "timeout_s": 60, "connect_timeout_s": 5,
        }
        values.update(ssh)
        lines = [f"name = {_toml_str(name)}", 'adapter = "ssh"', f"runtime = {_toml_str(runtime)}",
                 f"threads = {threads}", "", "[ssh]"]
        for k, v in values.items():
            if v is None:
                continue
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, (int, float)):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {_toml_str(str(v))}")
        path = path or self.root / f"{name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path


def board_device(board: StandInBoard, tmp_path: Path, **kw: object) -> Any:
    """The SSHBoard device of a profile written for ``board`` (``kw`` replace [ssh] values)."""
    from edgenas.devices.registry import get_device
    from edgenas.devices.ssh_board import SSHBoard

    dev = get_device(str(board.profile(path=tmp_path / "board.toml", **kw)))  # type: ignore[arg-type]
    assert isinstance(dev, SSHBoard)
    return dev


def wrapper(tmp_path: Path, name: str, body: str) -> Path:
    """An executable shell script (a fake board python, e.g. one that hangs or lacks a runtime)."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path
