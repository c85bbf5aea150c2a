"""Printing the lab's state for people."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import HostStatus


def print_status(rows: Sequence["HostStatus"]) -> None:
    print(f"{'host':<6} {'role':<4} {'state':<8} {'systemd':<9} {'address':<13} ssh")
    for r in rows:
        print(f"{r.name:<6} {r.role:<4} {'running' if r.running else 'stopped':<8} {r.systemd:<9} "
              f"{r.address:<13} {r.ssh_port}")
