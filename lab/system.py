"""Running commands on this machine for the lab, with errors that say what failed."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence


class LabError(Exception):
    """A lab step failed; the message is one line a user can act on."""


def run(cmd: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(list(cmd), input=input, capture_output=True, text=True,
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise LabError(f"{cmd[0]} is not installed: {exc}") from None
    except subprocess.TimeoutExpired:
        raise LabError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {detail[-1] if detail else 'no output'}")
    return proc


def require_tools(tools: dict[str, str]) -> None:
    """tools: command -> Debian package that provides it."""
    missing = {tool: pkg for tool, pkg in tools.items() if shutil.which(tool) is None}
    if missing:
        pkgs = " ".join(sorted(set(missing.values())))
        raise LabError(f"missing {', '.join(sorted(missing))}: install with `apt-get install -y {pkgs}`")
