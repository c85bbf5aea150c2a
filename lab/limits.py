"""Kernel limits the lab's hosts need, raised only as far as needed and restored by `down`.

Each booted host (systemd, journald, udev, ...) holds about 7 inotify instances, all counted
against root on this machine: 21 hosts need about 150, more than Debian's default of 128.
"""

from __future__ import annotations

import os
from pathlib import Path

from .state import LabState

INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")
PER_HOST = 8
SLACK = 32


def inotify_limit_needed(*, in_use: int, hosts: int, limit: int) -> int | None:
    """The limit to set so that `hosts` more hosts fit beside what is in use, or None if it fits."""
    need = in_use + hosts * PER_HOST + SLACK
    return None if need <= limit else need


def inotify_in_use() -> int:
    """inotify instances open by root's processes on this machine (the limit is per user)."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid != 0:
                continue
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                    count += 1
        except OSError:
            continue
    return count


def raise_for(hosts: int, state: LabState) -> None:
    limit = int(INOTIFY_LIMIT.read_text())
    wanted = inotify_limit_needed(in_use=inotify_in_use(), hosts=hosts, limit=limit)
    if wanted is None:
        return
    if state.inotify_limit_before is None:
        state.inotify_limit_before = limit
        state.save()
    INOTIFY_LIMIT.write_text(f"{wanted}\n")


def restore(state: LabState) -> None:
    if state.inotify_limit_before is not None:
        INOTIFY_LIMIT.write_text(f"{state.inotify_limit_before}\n")
        state.inotify_limit_before = None
        state.save()
