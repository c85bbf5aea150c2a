"""pitunnel/reconcile.py on a pure fake flow: a counter on a fake host brought to a target, one step at a time."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from enum import Enum
from pathlib import Path

import pytest

from pitunnel import reconcile
from pitunnel.play import Options, Play
from pitunnel.remote import Result
from pitunnel.report import Reporter
from pitunnel.runner import StepFailed
from tests.unit.fake_hosts import load

ROOT = Path(__file__).resolve().parents[2]


class Step(Enum):
    UP = "add one"
    DONE = "done"
    REFUSED = "refused"


class Counter(reconcile.Flow[int, Step]):
    """The state is `host[0]`; each UP adds `by` to it (0: a step that makes no progress)."""

    prefix, whole, cap = "counter", "counting", 5
    host = "h1"

    def __init__(self, host: list[int], target: int, *, by: int = 1) -> None:
        self.out = io.StringIO()
        super().__init__(Reporter(colour=False, out=self.out))
        self.on, self.target, self.by = host, target, by
        self.reads = 0

    def read(self) -> int:
        self.reads += 1
        return self.on[0]

    def next_step(self, state: int, started: bool) -> tuple[Step, str]:
        if state < 0:
            return Step.REFUSED, "below zero: fix it by hand"
        return (Step.UP, f"{state} < {self.target}") if state < self.target else (Step.DONE, "")

    def after(self, state: int, step: Step) -> int:
        return state + 1 if step is Step.UP else state

    def apply(self, step: Step, state: int) -> str:
        self.on[0] += self.by
        return f"now {self.on[0]}"

    def finished(self, state: int) -> tuple[str, str]:
        return "counted", f"at {state}"

    @property
    def lines(self) -> list[str]:
        return [" ".join(line.split()) for line in self.out.getvalue().splitlines()]


def test_the_loop_reads_applies_and_reads_again_until_done() -> None:
    host = [1]
    flow, applied = Counter(host, 3), reconcile.Applied()
    reconcile.reconcile(flow, check=False, applied=applied)
    assert host == [3] and applied.count == 2 and flow.reads == 3
    assert flow.lines == ["changed h1 counter: add one - now 2", "changed h1 counter: add one - now 3",
                          "ok h1 counted - at 3"]


def test_check_mode_lists_the_plan_and_applies_nothing() -> None:
    host = [1]
    flow, applied = Counter(host, 3), reconcile.Applied()
    reconcile.reconcile(flow, check=True, applied=applied)
    assert host == [1] and applied.count == 0 and flow.reads == 1
    assert flow.lines == ["would change h1 counter: add one - 1 < 3", "would change h1 counter: add one - 2 < 3",
                          "ok h1 counter: done"]


def test_a_step_that_makes_no_progress_fails_at_the_cap_naming_it() -> None:
    flow = Counter([0], 3, by=0)
    with pytest.raises(StepFailed):
        reconcile.reconcile(flow, check=False, applied=reconcile.Applied())
    assert len([line for line in flow.lines if line.startswith("changed")]) == Counter.cap
    assert flow.lines[-1] == "failed h1 counting - no progress after 5 steps, the last 'add one' (a bug: please report)"


def test_a_refusal_is_reported_then_raised_and_nothing_applied() -> None:
    host = [-1]
    flow = Counter(host, 3)
    with pytest.raises(StepFailed, match="below zero"):
        reconcile.reconcile(flow, check=False, applied=reconcile.Applied())
    assert host == [-1] and flow.lines == ["failed h1 counting - below zero: fix it by hand"]
    reconcile.reconcile(check := Counter(host, 3), check=True, applied=reconcile.Applied())
    assert check.lines == ["failed h1 counter: refused - below zero: fix it by hand"]


def test_plan_stops_at_its_limit() -> None:
    steps = reconcile.plan(0, lambda s, started: (Step.UP, ""), lambda s, step: s, limit=4)
    assert [s for s, _ in steps] == [Step.UP] * 4


def test_plan_lists_at_most_ten_steps_unless_told() -> None:
    steps = reconcile.plan(0, lambda s, started: (Step.UP, ""), lambda s, step: s)
    assert len(steps) == 10


class Resumed(Counter):
    """A counter that notes a run found under way, when `under_way` says so (the base class: never)."""

    resumed = "an earlier run stopped halfway: going on"

    def __init__(self, host: list[int], target: int, *, halfway: bool | None) -> None:
        super().__init__(host, target)
        self.halfway = halfway
        self.started: list[bool] = []

    def under_way(self, state: int) -> bool:
        return super().under_way(state) if self.halfway is None else self.halfway

    def next_step(self, state: int, started: bool) -> tuple[Step, str]:
        self.started.append(started)
        return super().next_step(state, started)


@pytest.mark.parametrize("halfway", [None, False, True])
def test_a_flow_is_under_way_only_when_it_says_so_and_then_its_note_is_shown(halfway: bool | None) -> None:
    flow = Resumed([1], 2, halfway=halfway)
    reconcile.reconcile(flow, check=False, applied=reconcile.Applied())
    noted = [line for line in flow.lines if "stopped halfway" in line]
    assert flow.started == [bool(halfway), True] and len(noted) == (1 if halfway else 0)
    assert flow.lines[-2:] == ["changed h1 counter: add one - now 2", "ok h1 counted - at 2"]


@pytest.mark.parametrize("k", [1, 3])
def test_the_kill_hook_kills_right_after_the_kth_applied_step(k: int) -> None:
    """A real process: KILL_AFTER=k, steps counted over two threads, SIGKILLed after the k-th, never before."""
    script = textwrap.dedent("""
        import threading
        from pitunnel.reconcile import Applied
        applied = Applied()
        def run():
            for _ in range(2):
                applied.done()
                print("step", flush=True)
        threads = [threading.Thread(target=run) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        print("survived", flush=True)
        """)
    env = {**os.environ, reconcile.KILL_AFTER: str(k)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == -9, done.stdout + done.stderr
    assert "survived" not in done.stdout and done.stdout.count("step") <= k - 1  # the k-th never printed
    without = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=30,
                             env={n: v for n, v in os.environ.items() if n != reconcile.KILL_AFTER})
    assert without.returncode == 0 and without.stdout.count("step") == 4 and "survived" in without.stdout


def test_narrowed_restores_the_inventory_and_limit_whatever_happens(tmp_path: Path) -> None:
    inv = load(tmp_path, "vps:\n  main: {address: 203.0.113.1}\npis: {}\n")
    other = load(tmp_path, "vps:\n  spare: {address: 203.0.113.2}\npis: {}\n")
    play = Play(inv, Options(limit=frozenset({"main"})), Reporter(colour=False))
    with pytest.raises(RuntimeError):
        with play.narrowed(inventory=other, limit=frozenset({"spare"})):
            assert play.inventory is other and play.options.limit == {"spare"}
            with play.narrowed(limit=frozenset()):
                assert play.options.limit == frozenset() and play.inventory is other
            assert play.options.limit == {"spare"}
            raise RuntimeError("a step failed")
    assert play.inventory is inv and play.options.limit == {"main"}
    assert [h.name for h in play.selected(inv.vps.values())] == ["main"]


class Halting(Counter):
    """A Counter whose hosts fail at 2: the step said so itself, the run ends there quietly."""

    def next_step(self, state: int, started: bool) -> tuple[Step, str]:
        return (HaltStep.HALTED, "failed on h1") if state == 2 else super().next_step(state, started)


class HaltStep(Enum):
    HALTED = "halted"


def test_a_halted_flow_ends_without_a_line_of_its_own_nor_an_error() -> None:
    host = [1]
    flow = Halting(host, 3)
    reconcile.reconcile(flow, check=False, applied=reconcile.Applied())
    assert host == [2] and flow.lines == ["changed h1 counter: add one - now 2"]
    reconcile.reconcile(check := Halting([1], 3), check=True, applied=reconcile.Applied())
    assert check.lines == ["would change h1 counter: add one - 1 < 3"]  # the listing ends where the run would


class Recording(Counter):
    """A Counter that records the `started` its next_step is given."""

    def __init__(self, host: list[int], target: int, *, by: int = 1) -> None:
        super().__init__(host, target, by=by)
        self.started: list[bool] = []

    def next_step(self, state: int, started: bool) -> tuple[Step, str]:
        self.started.append(started)
        return super().next_step(state, started)


def test_a_flow_found_idle_starts_unstarted_and_every_later_pick_knows_it_applied_a_step() -> None:
    flow = Recording([1], 3)
    reconcile.reconcile(flow, check=False, applied=reconcile.Applied())
    assert flow.started == [False, True, True]


def test_check_mode_of_a_flow_that_never_ends_lists_its_cap_of_steps() -> None:
    flow = Counter([0], 100)
    reconcile.reconcile(flow, check=True, applied=reconcile.Applied())
    assert len(flow.lines) == Counter.cap and all(line.startswith("would change") for line in flow.lines)


class Failing:
    """A host on which every script fails with `stderr`, keeping the scripts it was sent."""

    name = "h1"

    def __init__(self, stderr: str) -> None:
        self.stderr = stderr
        self.scripts: list[str] = []

    def run(self, script: str, **_: object) -> Result:
        self.scripts.append(script)
        return Result(1, "", self.stderr)


def test_a_failed_steps_script_is_reported_by_the_last_300_characters_of_its_stderr() -> None:
    """A long error is cut from the front: the line names the end (where the cause is), 300 characters of it."""
    out = io.StringIO()
    tail = "y" * 290 + " the cause"
    host = Failing("  " + "x" * 500 + tail + "\n")
    with pytest.raises(StepFailed) as raised:
        reconcile.run_script(host, "do it", Reporter(colour=False, out=out), "a step")  # type: ignore[arg-type]
    assert host.scripts == ["do it"] and str(raised.value) == tail
    assert [" ".join(line.split()) for line in out.getvalue().splitlines()] == [f"failed h1 a step - {tail}"]
