"""The operation protocol: an Op reads facts and plans the commands that close the gap (a Plan); a Handler
runs once at the end of a step if an op that notifies it changed. Observe reads a fact and changes nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ..facts import Fact, Facts


class Refused(Exception):
    """An op will not touch something pitunnel did not make: the host's step fails before any change."""


@dataclass
class Plan:
    commands: list[str]
    reason: str  # one line: what will change, or why nothing needs to
    diff: str = ""
    backups: list[str] = field(default_factory=list)  # paths backed up before change, for rollback
    covers: tuple[str, ...] = ()  # handlers this change makes unneeded when it runs after what notified them
    sessions_ended: int = 0  # live sessions this change ends (roles/vps/sessions.py): counted in the recap

    @property
    def changes(self) -> bool:
        return bool(self.commands)


class Op:
    title: str = ""
    notify: tuple[str, ...] = ()

    def facts(self) -> list[Fact[Any]]:
        raise NotImplementedError

    def plan(self, facts: Facts) -> Plan:
        raise NotImplementedError


@dataclass
class Handler:
    """Runs once at the end of a step if an op that notifies it changed. `verify` is a laptop-side
    check after it ran (e.g. a fresh login); if it fails, the notifying ops' files are restored.
    A handler with a `verify` guards its changes with a commit-confirm on the host (pitunnel/guard.py)."""

    name: str
    commands: list[str]
    verify: Callable[[], bool] | None = None
    verify_hint: str = ""
    confirm_seconds: float | None = None  # the host rolls an unproven change back after this long (None: guard.CONFIRM_SECONDS)

    @property
    def guarded(self) -> bool:
        return self.verify is not None


T = TypeVar("T")


@dataclass
class Observe(Op, Generic[T]):
    """Changes nothing: reads a fact during the step's single gather and describes its value in one line;
    the step reads the value itself from the facts converge returns."""

    fact: Fact[T]
    describe: Callable[[T], str]
    title: str = ""

    def facts(self) -> list[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        return Plan([], self.describe(facts.value(self.fact)))
