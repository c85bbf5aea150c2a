"""What the lab has made, recorded before it is made, so `down` can undo it even after a crash."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_DIR = Path(os.environ.get("PITUNNEL_LAB_STATE", "/var/lib/pitunnel-lab"))
CACHE_DIR = Path(os.environ.get("PITUNNEL_LAB_CACHE", "/var/cache/pitunnel-lab"))


@dataclass
class HostState:
    name: str
    role: str
    root: str  # merged overlay mount point
    nspawn_pid: int = 0
    nspawn_start: str = ""  # /proc/PID/stat start time, so a reused PID is never signalled


@dataclass
class LabState:
    release: str = ""
    pis: int = 0
    vpses: int = 1
    bridges: list[str] = field(default_factory=list)
    addresses: list[list[str]] = field(default_factory=list)  # [cidr, dev]
    firewall: bool = False
    ip_forward_before: str | None = None
    inotify_limit_before: int | None = None
    proxy_pid: int = 0
    proxy_start: str = ""
    acme_pids: list[list[Any]] = field(default_factory=list)  # [pid, start time] of each ACME process (lab/acme.py)
    hosts: dict[str, HostState] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return STATE_DIR / "state.json"

    def save(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls) -> "LabState":
        path = STATE_DIR / "state.json"
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        hosts = {name: HostState(**h) for name, h in raw.pop("hosts", {}).items()}
        return cls(**raw, hosts=hosts)


def proc_start_time(pid: int) -> str:
    """The kernel's start time of PID ("" if gone): with the PID it names one process for good."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]


def same_process(pid: int, start: str) -> bool:
    return pid > 0 and bool(start) and proc_start_time(pid) == start


def stop_process(pid: int, start: str, *, timeout: float = 20) -> None:
    """TERM the recorded process (only if it is still the one we started), KILL it after `timeout`."""
    import os
    import signal
    import time

    if not same_process(pid, start):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not same_process(pid, start):
            return
        _reap(pid)
        time.sleep(0.05)
    if same_process(pid, start):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        _reap(pid)


def _reap(pid: int) -> None:
    import os

    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
