"""One driver for every cross-host flow whose state is read from its hosts and the laptop's files (rotate-keys,
the laptop key, rotate-vps-hostkey, migrate).

A flow is a state machine with a fixed list of steps (an Enum with DONE and REFUSED among them, and HALTED
if a step can fail on some hosts and let the others go on). It says
how to read its state from the hosts, which step comes next from a state and why (a pure function), what
a step leads to when it succeeds (pure, for check mode), and how to apply a step. `reconcile` loops:
read, pick the next step, apply it, read again, until DONE, REFUSED or HALTED (a step failed on hosts that
reported it and are named in the recap; a rerun goes on from there). Check mode lists the steps the
state leads to and applies nothing. A flow stuck on its steps fails after `cap` of them, naming the last.
No journal on the laptop: a run killed anywhere is finished by the next, which reads where it stopped.
"""

from __future__ import annotations

import os
import signal
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum
from typing import Generic, TypeVar

from pitunnel.remote import Remote
from pitunnel.report import Reporter
from pitunnel.runner import StepFailed

# tests only: SIGKILL this process right after its k-th applied step (proves a rerun finishes the job)
KILL_AFTER = "PITUNNEL_TEST_KILL_AFTER_STEP"
DONE, REFUSED, HALTED = "DONE", "REFUSED", "HALTED"  # the names of the steps that end a flow's run

S = TypeVar("S")
K = TypeVar("K", bound=Enum)


def failed(reporter: Reporter, host: str, title: str, why: str) -> StepFailed:
    """Report a failed step, and return the exception to raise: `raise failed(...)`."""
    reporter.line(host, "failed", title, why)
    return StepFailed(why)


def run_script(remote: Remote, script: str, reporter: Reporter, title: str) -> None:
    """Run a step's script; if it fails, its stderr's tail is reported under `title` and StepFailed raised."""
    result = remote.run(script)
    if not result.ok:
        raise failed(reporter, remote.name, title, result.stderr.strip()[-300:])


class Applied:
    """The steps applied in one run, over every host (they run in parallel). Tests only: with KILL_AFTER=k
    in the environment, the process is SIGKILLed right after the k-th."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def done(self) -> None:
        at = os.environ.get(KILL_AFTER)
        with self.lock:
            self.count += 1
            if at and self.count == int(at):
                os.kill(os.getpid(), signal.SIGKILL)


def plan(state: S, next_step: Callable[[S, bool], tuple[K, str]], after: Callable[[S, K], S], *,
         started: bool = False, limit: int = 10) -> list[tuple[K, str]]:
    """Every step from `state` to DONE (or to a refusal), and why each: what check mode lists."""
    steps = []
    for _ in range(limit):
        step, why = next_step(state, started)
        steps.append((step, why))
        if step.name in (DONE, REFUSED, HALTED):
            break
        started = True
        state = after(state, step)
    return steps


class Flow(ABC, Generic[S, K]):
    """One host's run of a flow: what `reconcile` needs to drive it. Each applied step is reported as
    `PREFIX: <the step's text>` for `host`; a refusal (or no progress) as `whole`."""

    host: str
    prefix: str
    whole: str
    cap: int = 12  # more steps than any run needs: beyond them, the flow loops (a bug)
    resumed: str = ""  # the note when a run finds the flow under way ("" none)

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    @abstractmethod
    def read(self) -> S:
        """The state, read from the hosts."""

    @abstractmethod
    def next_step(self, state: S, started: bool) -> tuple[K, str]:
        """The step to take next, and why (for REFUSED: what to do instead). `started`: this run applied a
        step already, or found the flow under way."""

    @abstractmethod
    def after(self, state: S, step: K) -> S:
        """The state a step leads to when it succeeds (check mode shows the whole way with it)."""

    @abstractmethod
    def apply(self, step: K, state: S) -> str | None:
        """Apply one step; what it did ("" : the reason it was picked), or None if it reported itself."""

    @abstractmethod
    def finished(self, state: S) -> tuple[str, str]:
        """The title and detail of the line that says the flow is done."""

    def under_way(self, state: S) -> bool:
        """Did an earlier run stop halfway (a finished flow is then not followed by another)?"""
        return False

    def planned(self, state: S, step: K, why: str) -> bool:
        """Check mode: say one step of the plan (`state`: as read from the hosts); False ends the listing."""
        if step.name == HALTED:
            return False
        status = {DONE: "ok", REFUSED: "failed"}.get(step.name, "would change")
        self.reporter.line(self.host, status, f"{self.prefix}: {step.value}", why)
        return True


def reconcile(flow: Flow[S, K], *, check: bool, applied: Applied) -> None:
    """Drive `flow` to DONE: read, pick, apply, read again. Raises StepFailed (reported) on a refusal, a
    failed step or a loop. In check mode, list the plan and apply nothing."""
    state = flow.read()
    if check:
        for step, why in plan(state, flow.next_step, flow.after, limit=flow.cap):
            if not flow.planned(state, step, why):
                break
        return
    started = flow.under_way(state)
    if started and flow.resumed:
        flow.reporter.note(flow.host, flow.resumed)
    last = None
    for _ in range(flow.cap):
        step, why = flow.next_step(state, started)
        if step.name == DONE:
            flow.reporter.line(flow.host, "ok", *flow.finished(state))
            return
        if step.name == REFUSED:
            raise failed(flow.reporter, flow.host, flow.whole, why)
        if step.name == HALTED:
            return  # the hosts that failed said why, and the recap names them
        detail = flow.apply(step, state)
        if detail is not None:
            flow.reporter.line(flow.host, "changed", f"{flow.prefix}: {step.value}", detail or why)
        started, last = True, step
        applied.done()
        state = flow.read()
    assert last is not None
    raise failed(flow.reporter, flow.host, flow.whole,
                 f"no progress after {flow.cap} steps, the last {last.value!r} (a bug: please report)")
