"""Small probes the lab tests use: TCP reachability from inside a host, SSH logins from the laptop."""

from __future__ import annotations

import socket
import subprocess

import lab


def tcp_from(host: str, address: str, port: int, timeout: float = 3) -> bool:
    """Can lab host `host` open a TCP connection to address:port?"""
    script = f"timeout {timeout} bash -c '</dev/tcp/{address}/{port}' 2>/dev/null && echo open || echo closed"
    return lab.exec_in(host, script, timeout=timeout + 10).stdout.strip() == "open"


def tcp_from_laptop(address: str, port: int, timeout: float = 3) -> bool:
    try:
        socket.create_connection((address, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def ssh_cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", *args],
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
