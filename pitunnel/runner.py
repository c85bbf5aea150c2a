"""Converging one host on a step: gather facts, plan every op, apply the gaps in one script,
then run notified handlers once, with a laptop-side check and rollback if that check fails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .facts import Facts, gather
from .ops import Handler, Op, Plan, Refused, drop_backup_commands, restore_commands
from .remote import Remote
from .report import Reporter


class StepFailed(Exception):
    """A step on a host failed; it has been reported and rolled back where it could be."""


@dataclass(frozen=True)
class Mode:
    check: bool = False
    diff: bool = False


def facts_for(remote: Remote, ops: Sequence[Op]) -> Facts:
    """Read, in one round trip, every fact that `ops` need: for steps that look before they leap and
    then converge the same ops with `known=` (valid as long as nothing changed the host in between)."""
    return gather(remote, [f for op in ops for f in op.facts()])


def converge(remote: Remote, ops: Sequence[Op], reporter: Reporter, mode: Mode,
             handlers: Sequence[Handler] = (), *, known: Facts | None = None) -> list[tuple[Op, Plan]]:
    """Bring the host to what `ops` describe. Returns each op with its plan. Raises StepFailed."""
    facts = known if known is not None else facts_for(remote, ops)
    plans: list[tuple[Op, Plan]] = []
    for op in ops:
        try:
            plans.append((op, op.plan(facts)))
        except Refused as exc:  # nothing has been applied yet: the host's step fails untouched
            reporter.line(remote.name, "failed", op.title, str(exc))
            raise StepFailed(f"{remote.name}: {op.title}: {exc}") from None
    changed = [(op, p) for op, p in plans if p.changes]
    if mode.check:
        for op, plan in plans:
            reporter.line(remote.name, "would change" if plan.changes else "ok", op.title, plan.reason, plan.diff)
        for handler in _notified(handlers, changed):
            if covered(handler, changed) is None:
                reporter.note(remote.name, f"would run handler: {handler.name}")
        return plans
    if not changed:
        for op, plan in plans:
            reporter.line(remote.name, "ok", op.title, plan.reason)
        return plans
    failed_at = _apply(remote, changed)
    position = {id(op): index for index, (op, _) in enumerate(changed)}
    for op, plan in plans:
        index = position.get(id(op))
        if index is None:
            reporter.line(remote.name, "ok", op.title, plan.reason)
        elif failed_at is None or index < failed_at[0]:
            reporter.line(remote.name, "changed", op.title, plan.reason, plan.diff)
        elif index == failed_at[0]:
            reporter.line(remote.name, "failed", op.title, failed_at[1])
        else:
            reporter.line(remote.name, "skipped", op.title, "an earlier operation failed")
    if failed_at is not None:
        done = [p for _, p in changed[: failed_at[0]]]
        _run(remote, [c for p in done for path in p.backups for c in restore_commands(path)])
        raise StepFailed(f"{remote.name}: {changed[failed_at[0]][0].title}: {failed_at[1]}")
    _handle(remote, handlers, changed, reporter)
    return plans


def _notified(handlers: Sequence[Handler], changed: Sequence[tuple[Op, Plan]]) -> list[Handler]:
    names = {name for op, _ in changed for name in op.notify}
    return [h for h in handlers if h.name in names]


def covered(handler: Handler, changed: Sequence[tuple[Op, Plan]]) -> Plan | None:
    """The change that makes `handler` unneeded: one that covers it and ran after every op that notified
    it (a service started from stopped once its files were in place needs no restart). Handlers with
    a check after them always run."""
    if handler.verify is not None:
        return None
    last_notifier = max((i for i, (op, _) in enumerate(changed) if handler.name in op.notify), default=-1)
    return next((p for _, p in changed[last_notifier + 1:] if handler.name in p.covers), None)


def _apply(remote: Remote, changed: Sequence[tuple[Op, Plan]]) -> tuple[int, str] | None:
    """Apply every changed op in one script, stopping at the first failure: (index, why) or None."""
    parts = []
    for index, (_, plan) in enumerate(changed):
        body = "\n".join(plan.commands)
        parts.append(f"printf '@@OP {index}\\n'\n( set -e\n{body}\n) 2>&1\nrc=$?\n"
                     f"printf '\\n@@OPRC {index} %d\\n' $rc\n[ $rc -eq 0 ] || exit $rc")
    result = remote.run("\n".join(parts) + "\n")
    outputs: dict[int, list[str]] = {}
    codes: dict[int, int] = {}
    current = None
    for line in result.stdout.split("\n"):
        if line.startswith("@@OP "):
            current = int(line.split()[1])
            outputs[current] = []
        elif line.startswith("@@OPRC "):
            _, idx, code = line.split()
            codes[int(idx)] = int(code)
            current = None
        elif current is not None:
            outputs[current].append(line)
    for index in range(len(changed)):
        rc = codes.get(index)
        if rc != 0:
            text = " ".join(l.strip() for l in outputs.get(index, []) if l.strip())[-400:]
            if rc is None:
                text = text or result.stderr.strip()[-400:] or f"did not run (script exit {result.rc})"
            return index, text or f"exit {rc}"
    return None


def _handle(remote: Remote, handlers: Sequence[Handler], changed: Sequence[tuple[Op, Plan]],
            reporter: Reporter) -> None:
    for handler in _notified(handlers, changed):
        watched = [p for op, p in changed if handler.name in op.notify]
        backups = [path for p in watched for path in p.backups]
        if covered(handler, changed) is not None:
            reporter.line(remote.name, "ok", f"handler {handler.name}", "not needed: started after the change")
            _run(remote, [c for path in backups for c in drop_backup_commands(path)])
            continue
        result = remote.run("set -e\n" + "\n".join(handler.commands) + "\n")
        problem = None
        if not result.ok:
            problem = (result.stdout + result.stderr).strip()[-300:] or f"exit {result.rc}"
        elif handler.verify is not None and not handler.verify():
            problem = handler.verify_hint or "check after the handler failed"
        if problem is None:
            reporter.line(remote.name, "changed", f"handler {handler.name}", "ran once")
            _run(remote, [c for path in backups for c in drop_backup_commands(path)])
            continue
        restore = [c for path in backups for c in restore_commands(path)]
        rerun = remote.run("\n".join(restore + handler.commands) + "\n")
        back = "rolled back" if rerun.ok else f"ROLLBACK FAILED: {(rerun.stdout + rerun.stderr).strip()[-200:]}"
        reporter.line(remote.name, "failed", f"handler {handler.name}", f"{problem}; {back}")
        raise StepFailed(f"{remote.name}: handler {handler.name}: {problem}; {back}")


def _run(remote: Remote, commands: list[str]) -> None:
    if commands:
        remote.run("\n".join(commands) + "\n")
