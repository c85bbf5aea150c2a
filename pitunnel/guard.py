"""Commit-confirm for guarded handlers (sshd's): the host rolls back on its own a change that no run has
proven by a fresh login; the runner arms, proves, confirms or rolls back each one (runner.py)."""

from __future__ import annotations

import base64
from collections.abc import Sequence

from .facts import Fact, Facts
from .ops.base import Handler
from .ops.shell import BACKUP_DIR, backup_path, drop_backup_commands, q, restore_commands


# Before a run writes a file whose handler must be proven by a fresh login (sshd's), it records the change
# on the host as pending (a rollback script that names the handler and the files, whose backups it keeps)
# and arms a transient systemd timer that runs that script unless a run proves the change first: if the
# laptop's connection dies between the write and the proof, the host puts the old files back on its own.
# The next run reads the records with its other facts and proves or rolls back each one before anything else.
CONFIRM_SECONDS: float = 120
TIMER_COMMAND = ("systemd-run --quiet --unit={unit} --on-active={seconds} --timer-property=AccuracySec=1s "
                 "/bin/sh {record}")
DISARM_COMMAND = ("systemctl stop {unit}.timer {unit}.service 2>/dev/null || true; "
                  "systemctl reset-failed {unit}.timer {unit}.service 2>/dev/null || true")
PENDING_MARK = "# handler: "
GONE = "@@PITUNNEL-PENDING-GONE"  # the record vanished: the host's timer rolled the change back already


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")


def pending_dir() -> str:
    return f"{BACKUP_DIR}/pending"


def pending_record(handler: str) -> str:
    return f"{pending_dir()}/{_slug(handler)}"


def confirm_unit(handler: str) -> str:
    return f"pitunnel-confirm-{_slug(handler)}"


def confirm_seconds(handler: Handler) -> float:
    return handler.confirm_seconds if handler.confirm_seconds is not None else CONFIRM_SECONDS


def lock_commands() -> list[str]:
    """Hold the pending records' lock for the rest of the script: the run and the host's timer take turns."""
    return [f"mkdir -p {q(pending_dir())}", f"exec 9>>{q(pending_dir())}/.lock", "flock 9"]


def _timer(handler: Handler) -> list[str]:
    unit, record = confirm_unit(handler.name), pending_record(handler.name)
    return [DISARM_COMMAND.format(unit=unit),
            TIMER_COMMAND.format(unit=unit, seconds=confirm_seconds(handler), record=q(record))]


def rollback_script(handler: Handler, paths: Sequence[str]) -> str:
    """The pending record: run by the timer (or by a run whose proof failed), it restores the files,
    runs the handler again and forgets the change; it does nothing once the change is proven."""
    record, unit = q(pending_record(handler.name)), confirm_unit(handler.name)
    lines = ["#!/bin/sh",
             f"# pitunnel: a change that handler \"{handler.name}\" has not proven yet (by a fresh login after it).",
             f"# Unless a run proves it first, {unit}.timer runs this script: the old files come back.",
             f"{PENDING_MARK}{handler.name}",
             *(f"# path: {p}" for p in paths),
             *lock_commands(), f"[ -e {record} ] || exit 0",
             *(c for p in paths for c in restore_commands(p)),
             # set -e is ignored in an `if` condition, even in a subshell: run the subshell first, then test it
             "( set -e", *handler.commands, ")", "if [ $? -eq 0 ]; then",
             # the timer only: this script may be its service, which must not stop itself
             f"  rm -f {record}", f"  systemctl stop {unit}.timer 2>/dev/null || true",
             f"  echo \"pitunnel: unproven change rolled back, handler {handler.name} ran again\"", "  exit 0", "fi",
             f"echo \"pitunnel: rolling back: handler {handler.name} failed; the record stays for the next run\" >&2",
             "exit 1"]
    return "\n".join(lines) + "\n"


def arm_commands(handler: Handler, paths: Sequence[str]) -> list[str]:
    """Before the first write that notifies `handler`: the pending record, and the timer that rolls it back."""
    record = q(pending_record(handler.name))
    blob = base64.b64encode(rollback_script(handler, paths).encode()).decode()
    return [f"mkdir -p {q(pending_dir())} && chmod 700 {q(BACKUP_DIR)} {q(pending_dir())}", *lock_commands(),
            # backups left by an older run: the timer must restore only what this run backs up
            *(f"rm -rf {q(backup_path(p))} {q(backup_path(p))}.absent" for p in paths),
            f"printf %s {blob} | base64 -d > {record}.new && mv -f {record}.new {record}",
            *_timer(handler)]


def prove_commands(handler: Handler) -> list[str]:
    """The handler itself, if its change is still pending, with the timer re-armed for the check after it."""
    record = q(pending_record(handler.name))
    return [*lock_commands(), f"[ -e {record} ] || {{ echo {GONE}; exit 3; }}", *_timer(handler), "set -e", *handler.commands]


def confirm_commands(handler: Handler, paths: Sequence[str]) -> list[str]:
    """The change is proven: disarm the timer, drop the backups and the record (unless the timer won)."""
    record = q(pending_record(handler.name))
    return [*lock_commands(), f"[ -e {record} ] || {{ echo {GONE}; exit 3; }}", *disarm_commands(handler, paths)]


def disarm_commands(handler: Handler, paths: Sequence[str]) -> list[str]:
    return [DISARM_COMMAND.format(unit=confirm_unit(handler.name)),
            *(c for p in paths for c in drop_backup_commands(p)), f"rm -f {q(pending_record(handler.name))}"]


def rollback_commands(handler: Handler) -> list[str]:
    return [f"sh {q(pending_record(handler.name))}"]


def _pending(output: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in output.splitlines():
        if line.startswith(PENDING_MARK):
            current = found.setdefault(line[len(PENDING_MARK):], [])
        elif line.startswith("# path: ") and current is not None:
            current.append(line[len("# path: "):])
    return found


def pending_fact() -> Fact[dict[str, list[str]]]:
    """handler name -> the paths of its change that an earlier run left unproven on this host (read with the
    other facts: no extra round trip)."""
    return Fact("pending-changes", f"cd {q(pending_dir())} 2>/dev/null && for f in *; do "
                "[ -f \"$f\" ] && grep -h '^# \\(handler\\|path\\): ' \"$f\"; done; true", _pending)


def pending_changes(facts: Facts) -> dict[str, list[str]]:
    """handler name -> the paths of its change that an earlier run left unproven on the host (none if the
    facts did not read it)."""
    return facts.value(pending_fact()) if pending_fact().key in facts else {}
