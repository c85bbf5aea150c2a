"""systemd operations: a unit enabled and running (or not), and an op the host carries out on its own
once the run has left (a transient timer)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..facts import Fact, Facts
from .base import Op, Plan
from .shell import q


@dataclass(frozen=True)
class UnitState:
    """A systemd unit as `systemctl is-enabled` and `is-active` tell. `stopped`: not running at all (inactive,
    failed, unknown); a unit in the middle of (re)starting is neither active nor stopped."""

    enabled: bool
    active: bool
    stopped: bool


def unit_state(output: str) -> UnitState:
    enabled, active = ([*output.split(), "", ""])[:2]
    return UnitState(enabled == "enabled", active == "active", active in ("", "inactive", "failed", "unknown"))


def unit_fact(unit: str) -> Fact[UnitState]:
    u = q(unit)
    return Fact(f"unit:{unit}", f"systemctl is-enabled {u} 2>/dev/null; systemctl is-active {u} 2>/dev/null; true",
                unit_state)


@dataclass
class Service(Op):
    """A systemd unit enabled and running (or disabled and stopped). `covers` names the handlers that
    restart this unit: starting it from stopped, after the files that notified them, makes them unneeded."""

    unit: str
    enabled: bool = True
    running: bool = True
    title: str = ""
    covers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.title = self.title or f"service {self.unit}"

    @property
    def fact(self) -> Fact[UnitState]:
        return unit_fact(self.unit)

    def facts(self) -> list[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        now = facts.value(self.fact)
        cmds, gaps = [], []
        u = q(self.unit)
        if self.enabled != now.enabled:
            gaps.append("enable" if self.enabled else "disable")
            # systemctl enable and disable reload systemd's view of the unit files themselves
            cmds.append(f"systemctl {'enable' if self.enabled else 'disable'} --quiet {u}")
        else:
            cmds.append("systemctl daemon-reload")  # a unit file written earlier in this run
        if self.running != now.active:
            gaps.append("start" if self.running else "stop")
            cmds.append(f"systemctl {'start' if self.running else 'stop'} {u}")
        if not gaps:
            return Plan([], f"{'enabled' if now.enabled else 'disabled'}, {'active' if now.active else 'inactive'}")
        # only a unit that was not running at all starts from the new files; one in the middle of
        # (re)starting may still run the old ones, so its restart handler stays
        started = self.running and now.stopped
        return Plan(cmds, ", ".join(gaps), covers=self.covers if started else ())


LATER_SCRIPT = "/run/pitunnel-later.sh"  # what Later ops leave for the host to run once the run has left


@dataclass
class Later(Op):
    """`op`, decided now (its facts read and its refusals raised on this run), carried out by the host itself
    once this run has left it: for what would cut the connection the run rides (a Pi reached through its own
    tunnel). Its commands go to LATER_SCRIPT; `arm_later` starts them, last of all. Nothing proves them."""

    op: Op
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or self.op.title

    def facts(self) -> list[Fact[Any]]:
        return self.op.facts()

    def plan(self, facts: Facts) -> Plan:
        inner = self.op.plan(facts)
        if not inner.changes:
            return inner
        script = "\n".join(inner.commands) + "\n"
        return Plan([f"printf '%s' {q(script)} >> {LATER_SCRIPT}"],
                    f"{inner.reason}, once this run has left (its connection rides it)")


def arm_later(seconds: int, then: str = "") -> str:
    """The host runs what Later ops left, `seconds` from now, on its own (systemd-run), then `then`."""
    armed = LATER_SCRIPT + ".armed"
    script = f"sh {armed}; rm -f {armed}; systemctl daemon-reload" + (f"; {then}" if then else "")
    return (f"if [ -s {LATER_SCRIPT} ]; then mv -f {LATER_SCRIPT} {armed}; "
            f"systemd-run --quiet --collect --on-active={seconds} --timer-property=AccuracySec=100ms "
            f"/bin/sh -c {q(script)}; fi\n")
