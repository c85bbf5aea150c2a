"""The `pitunnel` command ([project.scripts] in pyproject.toml): Invoke's Program over the product's tasks
(pitunnel/tasks.py) alone, so `pip install .` gives `pitunnel provision-vps` in any folder. The lab and
benchmark tasks stay with `invoke` in the checkout."""

from __future__ import annotations

import os
import sys
from importlib.metadata import PackageNotFoundError, version

from invoke import Collection, Program

from . import failures, tasks


def namespace() -> Collection:
    ns = Collection()
    for task in tasks.TASKS:
        ns.add_task(task)
    return ns


def _version() -> str:
    try:
        return version("pitunnel")
    except PackageNotFoundError:
        return "unknown"


program = Program(namespace=namespace(), name="pitunnel", binary="pitunnel", version=_version())


def main() -> None:
    try:
        program.run()
        sys.stdout.flush()
    except BrokenPipeError:
        closed_pipe()


def closed_pipe() -> None:
    """stdout's reader went away (`pitunnel status | head -1`): end quietly, as `ls | head` does. Python's advice
    (the signal module's note on SIGPIPE): point stdout at /dev/null so the flush at exit raises nothing; exit
    with a shell's code for a process ended by SIGPIPE (128 + 13)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(failures.CLOSED_PIPE)
