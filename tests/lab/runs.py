"""Running plays from tests, and reading hosts' state through the lab (not through the code under test)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from invoke import Exit

import lab
from pitunnel.taskkit import Flags, run_play
from pitunnel.play import Play
from pitunnel.sshkeys import parse_public_key

ETC_SCRIPT = r"""cd /etc && find . -xdev \( -type f -o -type l \) ! -name '*-' ! -name 'ld.so.cache' | sort | while read -r f; do
  if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(sha256sum < "$f" | cut -c1-16) $(stat -c %a:%U:%G "$f")"; fi
done
"""


def etc_state(host: str) -> dict[str, str]:
    """Every file and link under /etc with hash and mode, read via the lab's own door (nsenter)."""
    out = lab.exec_in(host, ETC_SCRIPT, timeout=120).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def etc_diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    keys = sorted(set(before) | set(after))
    return [f"{k}: {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k)]


def play(inventory: Path, body: Callable[[Play], None], *, quiet: bool = False,
         **flags: Any) -> tuple[int, Play | None]:
    """Run a play as the tasks do, with the shared flags (pitunnel.taskkit.Flags) given; returns (exit code, play)."""
    holder: list[Play] = []

    def capture(p: Play) -> None:
        holder.append(p)
        body(p)

    try:
        run_play(capture, Flags(inventory=str(inventory), **flags), quiet=quiet)
        code = 0
    except Exit as exc:
        code = exc.code
    return code, (holder[0] if holder else None)


# `systemctl reload ssh` inside an in_host script, done only once sshd listens again: the reload's SIGHUP makes
# sshd close its listeners and exec itself anew, and systemctl returns before it has (a test connecting at once
# then met "connection refused"). Done: a listener on sshd's port with another socket inode than before.
RELOAD_SSHD = ("{ port=$(sshd -T 2>/dev/null | awk '$1 == \"port\" {print $2; exit}'); "
               "ino() { ss -Htlne \"sport = :$port\" | grep -o 'ino:[0-9]*' | sort | tr '\\n' ' '; }; "
               "was=$(ino); systemctl reload ssh && for i in $(seq 100); do now=$(ino); "
               "[ -n \"$now\" ] && [ \"$now\" != \"$was\" ] && break; sleep 0.1; done; }")


def in_host(host: str, script: str) -> str:
    return lab.exec_in(host, script, check=False, timeout=120).stdout


TUNNEL_KEY = "/var/lib/pitunnel/.ssh/pitunnel_ed25519"  # a lab Pi's tunnel key (made on the Pi)


def authorised_fingerprints(vps: str, pi: str) -> list[str]:
    """The fingerprints a lab VPS's tunnel account accepts for this Pi, read through the lab's door."""
    text = in_host(vps, "cat /var/lib/pitunnel/.ssh/authorized_keys")
    return [parse_public_key(" ".join(l.split()[-3:-1])).fingerprint for l in text.splitlines()
            if l.endswith(f"pitunnel:{pi}")]


def tunnel_key_fingerprint(pi: str) -> str:
    """The fingerprint of the key at the lab Pi's tunnel key path."""
    return parse_public_key(in_host(pi, f"ssh-keygen -y -f {TUNNEL_KEY}")).fingerprint


def wait_for(condition: Callable[[], bool], seconds: float, *, every: float = 0.2) -> bool:
    """Poll `condition` until it holds or `seconds` pass; whether it held (asked once more at the end)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return bool(condition())


def http_ok(pi: str) -> bool:
    """Does the Pi's web app answer 200 through the lab VPS's Nginx (its path route)?"""
    try:
        with urllib.request.urlopen(f"http://{lab.VPS_ADDR}/{pi}/", timeout=3) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
