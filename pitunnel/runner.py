"""Converging one host on a step: gather facts, plan every op, apply the gaps in one script,
then run notified handlers once, with a laptop-side check and rollback if that check fails."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from .dial import STOP  # set on Ctrl-C (pitunnel.taskkit.ctrl_c): no host starts another converge
from .facts import Facts, gather
from .guard import (GONE, arm_commands, confirm_commands, confirm_seconds, disarm_commands, lock_commands,
                    pending_changes, pending_fact, prove_commands, rollback_commands)
from .ops import Handler, Op, Plan, Refused, drop_backup_commands, restore_commands
from .remote import Remote
from .report import Reporter


class StepFailed(Exception):
    """A step on a host failed; it has been reported and rolled back where it could be."""


class Interrupted(Exception):
    """The user pressed Ctrl-C: this host stopped between two converges (the one in flight finished: its
    apply, handlers and proofs), so it is as consistent as after any step; a rerun carries on."""




def stop_point() -> None:
    """Raise Interrupted if the user asked to stop: called where a host may stop cleanly."""
    if STOP.is_set():
        raise Interrupted("interrupted")


@dataclass(frozen=True)
class Mode:
    check: bool = False
    diff: bool = False


@dataclass
class Converged:
    """What a converge read of the host (`facts`, typed by `facts.value(fact)`) and planned (`plans`)."""

    facts: Facts
    plans: list[tuple[Op, Plan]]

    @property
    def changed(self) -> bool:
        return any(p.changes for _, p in self.plans)

    def changes(self, op: Op) -> bool:
        """Did (or would) `op` change the host?"""
        return any(p.changes for o, p in self.plans if o is op)


def sshd_reload(remote: Remote, service: str, hint: str, *, keys_only: bool = False) -> Handler:
    """The "reload sshd" handler, guarded: sshd -t, the reload, then a fresh login from the laptop (a key
    login if `keys_only`) must work, else the change is rolled back (commit-confirm: see guard.arm_commands)."""
    return Handler("reload sshd", ["sshd -t", f"systemctl reload {service}"],
                   verify=lambda: remote.can_log_in_fresh(use_password=not keys_only), verify_hint=hint)


def facts_for(remote: Remote, ops: Sequence[Op]) -> Facts:
    """Read, in one round trip, every fact that `ops` need: for steps that look before they leap and
    then converge the same ops with `known=` (valid as long as nothing changed the host in between)."""
    return gather(remote, [f for op in ops for f in op.facts()] + [pending_fact()])


def converge(remote: Remote, ops: Sequence[Op], reporter: Reporter, mode: Mode,
             handlers: Sequence[Handler] = (), *, known: Facts | None = None) -> Converged:
    """Bring the host to what `ops` describe. Returns what it read and each op with its plan. Raises StepFailed,
    or Interrupted before it starts if the user pressed Ctrl-C."""
    stop_point()
    if known is None:
        with reporter.busy(remote.name, "reading the host"):
            facts = facts_for(remote, ops)
    else:
        facts = known
    guarded = {h.name: h for h in handlers if h.guarded}
    # an earlier run that died between a guarded write and its proof left the change pending: prove it
    # or roll it back before anything else, and never call it "already as wanted" meanwhile
    pending = {name: paths for name, paths in pending_changes(facts).items() if name in guarded}
    for name, paths in pending.items():
        if mode.check:
            reporter.line(remote.name, "would change", f"handler {name}", f"an earlier run left {', '.join(paths)} "
                          "unproven: would prove it with a fresh login, or roll it back")
        else:
            with reporter.busy(remote.name, f"handler {name}"):
                _prove(remote, guarded[name], paths, reporter, earlier=True)
    settled = {path: name for name, paths in pending.items() for path in paths}
    plans: list[tuple[Op, Plan]] = []
    for op in ops:
        try:
            plans.append((op, op.plan(facts)))
        except Refused as exc:  # nothing has been applied yet: the host's step fails untouched
            reporter.line(remote.name, "failed", op.title, str(exc))
            raise StepFailed(f"{remote.name}: {op.title}: {exc}") from None
    changed = [(op, p) for op, p in plans if p.changes]

    def unchanged_reason(op: Op, plan: Plan) -> str:
        name = settled.get(getattr(op, "path", ""))
        if name is None:
            return plan.reason
        return (f"written by an earlier run, not proven yet: handler {name} would prove it" if mode.check else
                f"written by an earlier run, proven now (handler {name})")

    if mode.check:
        for op, plan in plans:
            reporter.line(remote.name, "would change" if plan.changes else "ok", op.title,
                          plan.reason if plan.changes else unchanged_reason(op, plan), plan.diff)
        for handler in _notified(handlers, changed):
            if covered(handler, changed) is None:
                reporter.note(remote.name, f"would run handler: {handler.name}")
        return Converged(facts, plans)
    if not changed:
        for op, plan in plans:
            reporter.line(remote.name, "ok", op.title, unchanged_reason(op, plan))
        return Converged(facts, plans)
    armed = _armed(handlers, changed)
    scripts = [[*armed.get(index, []), *plan.commands] for index, (_, plan) in enumerate(changed)]
    titles = [op.title for op, _ in changed]
    with reporter.busy(remote.name, titles[0] + (f" (+{len(titles) - 1} more)" if len(titles) > 1 else "")):
        failed_at = _apply(remote, scripts)
    position = {id(op): index for index, (op, _) in enumerate(changed)}
    for op, plan in plans:
        index = position.get(id(op))
        if index is None:
            reporter.line(remote.name, "ok", op.title, unchanged_reason(op, plan))
        elif failed_at is None or index < failed_at[0]:
            reporter.line(remote.name, "changed", op.title, plan.reason, plan.diff)
            if plan.sessions_ended:
                reporter.ended(remote.name, plan.sessions_ended)
        elif index == failed_at[0]:
            reporter.line(remote.name, "failed", op.title, failed_at[1])
        else:
            reporter.line(remote.name, "skipped", op.title, "an earlier operation failed")
    if failed_at is not None:
        done = [p for _, p in changed[: failed_at[0]]]
        records = [h for h in _notified(handlers, changed[: failed_at[0] + 1]) if h.guarded]
        _run(remote, [*(lock_commands() if records else []),
                      *(c for p in done for path in p.backups for c in restore_commands(path)),
                      *(c for h in records for c in disarm_commands(h, _watched(h, changed)))])
        raise StepFailed(f"{remote.name}: {changed[failed_at[0]][0].title}: {failed_at[1]}")
    with reporter.busy(remote.name, "handler " + ", ".join(h.name for h in _notified(handlers, changed))):
        _handle(remote, handlers, changed, reporter)
    return Converged(facts, plans)


def _watched(handler: Handler, changed: Sequence[tuple[Op, Plan]]) -> list[str]:
    """The files backed up by the changes that notify `handler`."""
    return [path for op, p in changed if handler.name in op.notify for path in p.backups]


def _armed(handlers: Sequence[Handler], changed: Sequence[tuple[Op, Plan]]) -> dict[int, list[str]]:
    """index of a changed op -> the commit-confirm commands to run before it: the first op that notifies
    a guarded handler records the change as pending and arms the host's rollback timer."""
    armed: dict[int, list[str]] = {}
    for handler in _notified(handlers, changed):
        if handler.guarded:
            first = next(i for i, (op, _) in enumerate(changed) if handler.name in op.notify)
            armed.setdefault(first, []).extend(arm_commands(handler, _watched(handler, changed)))
    return armed


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


def _apply(remote: Remote, scripts: Sequence[list[str]]) -> tuple[int, str] | None:
    """Apply every changed op's commands in one script, stopping at the first failure: (index, why) or None."""
    parts = []
    for index, commands in enumerate(scripts):
        body = "\n".join(commands)
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
    for index in range(len(scripts)):
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
        backups = _watched(handler, changed)
        if handler.guarded:
            _prove(remote, handler, backups, reporter, earlier=False)
            continue
        if covered(handler, changed) is not None:
            reporter.line(remote.name, "ok", f"handler {handler.name}", "not needed: started after the change")
            _run(remote, [c for path in backups for c in drop_backup_commands(path)])
            continue
        result = remote.run("set -e\n" + "\n".join(handler.commands) + "\n")
        if result.ok:
            reporter.line(remote.name, "changed", f"handler {handler.name}", "ran once")
            _run(remote, [c for path in backups for c in drop_backup_commands(path)])
            continue
        problem = (result.stdout + result.stderr).strip()[-300:] or f"exit {result.rc}"
        restore = [c for path in backups for c in restore_commands(path)]
        # every file restored; then the handler, stopped at its first failing command (as its first run was)
        rerun = remote.run("\n".join([*restore, "( set -e", *handler.commands, ")"]) + "\n")
        back = "rolled back" if rerun.ok else f"ROLLBACK FAILED: {(rerun.stdout + rerun.stderr).strip()[-200:]}"
        reporter.line(remote.name, "failed", f"handler {handler.name}", f"{problem}; {back}")
        raise StepFailed(f"{remote.name}: handler {handler.name}: {problem}; {back}")


def _prove(remote: Remote, handler: Handler, paths: Sequence[str], reporter: Reporter, *, earlier: bool) -> None:
    """Run a guarded handler and its laptop-side check on a change recorded as pending on the host: keep the
    change (disarm the host's timer, drop the record) if both pass, else roll it back with the record."""
    what = f"an earlier run's unproven change to {', '.join(paths)}" if earlier else ""
    window = f"no proof within {confirm_seconds(handler)} s, so the host's timer rolled the change back on its own"
    result = remote.run("\n".join(prove_commands(handler)) + "\n")
    timed_out = GONE in result.stdout
    problem = window
    if timed_out:
        pass
    elif not result.ok:
        problem = (result.stdout + result.stderr).strip()[-300:] or f"exit {result.rc}"
    elif handler.verify is not None and not handler.verify():
        problem = handler.verify_hint or "check after the handler failed"
    else:
        confirmed = remote.run("\n".join(confirm_commands(handler, paths)) + "\n")
        if GONE not in confirmed.stdout:
            reporter.line(remote.name, "changed", f"handler {handler.name}",
                          f"proved {what} (a fresh login works)" if earlier else "ran once")
            return
        timed_out = True
    back = "rolled back"
    if not timed_out:
        rerun = remote.run("\n".join(rollback_commands(handler)) + "\n")
        back = "rolled back" if rerun.ok else f"ROLLBACK FAILED: {(rerun.stdout + rerun.stderr).strip()[-200:]}"
    if earlier:
        problem = f"{what}: {problem}"
    reporter.line(remote.name, "failed", f"handler {handler.name}", f"{problem}; {back}")
    raise StepFailed(f"{remote.name}: handler {handler.name}: {problem}; {back}")


def _run(remote: Remote, commands: list[str]) -> None:
    if commands:
        remote.run("\n".join(commands) + "\n")
