"""What a run prints: a line per operation per host, diffs on request, a heartbeat while a remote step
runs long, remote output with -v, and Ansible's recap; each host's lines kept for --json."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

COLOURS = {"ok": "32", "changed": "33", "failed": "31", "unreachable": "31", "skipped": "36", "would change": "33",
           "WARNING": "1;35"}
HEARTBEAT_AFTER = 3.0  # seconds a remote step runs before the first "still running" line
HEARTBEAT_EVERY = 5.0
RUNNING = "running"  # the heartbeat's tag


@dataclass
class Step:
    title: str
    status: str
    reason: str = ""


@dataclass
class Recap:
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    round_trips: int = 0
    sessions_ended: int = 0  # live sessions of retired keys ended on this host (roles/vps/sessions.py)
    interrupted: bool = False  # Ctrl-C came before this host was reached: nothing is known of it
    steps: list[Step] = field(default_factory=list, compare=False)  # every line, for --json

    @property
    def bad(self) -> bool:
        return bool(self.failed or self.unreachable or self.interrupted)

    def document(self) -> dict[str, Any]:
        """This host in `--json`: its counts and every line printed for it."""
        return {"ok": self.ok, "changed": self.changed, "failed": self.failed, "unreachable": self.unreachable,
                "skipped": self.skipped, "round_trips": self.round_trips, "sessions_ended": self.sessions_ended,
                "steps": [{"title": s.title, "status": s.status, "reason": s.reason} for s in self.steps]}


@dataclass
class Reporter:
    colour: bool | None = None  # None: when the output is a terminal
    show_diff: bool = False
    quiet: bool = False
    out: TextIO | None = None  # None: stdout (stderr with --json, whose document has stdout to itself)
    recaps: dict[str, Recap] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (host, text), repeated under the recap
    heartbeat_after: float = HEARTBEAT_AFTER
    heartbeat_every: float = HEARTBEAT_EVERY
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: bool = False  # the recap is printed: it is the last thing a run prints


    @property
    def stream(self) -> TextIO:
        return self.out if self.out is not None else sys.stdout

    def _print(self, text: str) -> None:
        if not self._done:
            print(text, file=self.stream, flush=True)

    def recap(self, host: str) -> Recap:
        with self._lock:
            return self.recaps.setdefault(host, Recap())

    def line(self, host: str, status: str, title: str, reason: str = "", diff: str = "") -> None:
        recap = self.recap(host)
        with self._lock:
            field_name = {"would change": "changed"}.get(status, status)
            setattr(recap, field_name, getattr(recap, field_name) + 1)
            recap.steps.append(Step(title, status, reason))
            if self.quiet and status == "ok":
                return
            tag = self._paint(f"{status:<12}", status)
            self._print(f"{tag} {host:<10} {title}" + (f" - {reason}" if reason else ""))
            if diff and self.show_diff:
                self._print(diff.rstrip("\n"))

    def ended(self, host: str, count: int) -> None:
        """`count` sessions were ended on `host`: counted in its recap."""
        recap = self.recap(host)
        with self._lock:
            recap.sessions_ended += count

    def note(self, host: str, text: str) -> None:
        with self._lock:
            if not self.quiet:
                self._print(f"{'':<12} {host:<10} {text}")

    def echo(self, host: str, text: str) -> None:
        """A line of a remote command's output (-v), prefixed by its host."""
        with self._lock:
            self._print(f"{'':<12} {host:<10} | {text}")

    def warn(self, host: str, text: str) -> None:
        """Something the owner should change although nothing failed: printed even when quiet, and again
        under the recap so it is the last thing read."""
        with self._lock:
            self.warnings.append((host, text))
            tag = self._paint(f"{'WARNING':<12}", "WARNING")
            self._print(f"{tag} {host:<10} {text}")

    @contextmanager
    def busy(self, host: str, step: str) -> Iterator[None]:
        """While the body runs: a line naming host, step and time elapsed once it has run `heartbeat_after`
        seconds, then every `heartbeat_every` (an apt install, a wait for listeners: never silent for long)."""
        done = threading.Event()
        started = time.monotonic()

        def beat() -> None:
            wait = self.heartbeat_after
            while not done.wait(wait):
                with self._lock:
                    self._print(f"{self._paint(f'{RUNNING:<12}', 'skipped')} {host:<10} {step} "
                                f"({time.monotonic() - started:.0f}s)")
                wait = self.heartbeat_every

        ticker = threading.Thread(target=beat, name=f"heartbeat-{host}", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()

    def _paint(self, text: str, status: str) -> str:
        colour = self.stream.isatty() if self.colour is None else self.colour
        return f"\033[{COLOURS.get(status, '0')}m{text}\033[0m" if colour else text

    def print_recap(self) -> None:
        if not self.recaps and not self.warnings:  # nothing was played (a --limit this task has no host in)
            return
        self._print("\nPLAY RECAP " + "*" * 60)
        for host, r in self.recaps.items():
            name = self._paint(f"{host:<26}", "failed" if r.bad else ("changed" if r.changed else "ok"))
            self._print(f"{name} : ok={r.ok:<4} changed={r.changed:<4} unreachable={r.unreachable:<4} "
                        f"failed={r.failed:<4} skipped={r.skipped:<4} round_trips={r.round_trips}"
                        + (f" sessions_ended={r.sessions_ended}" if r.sessions_ended else "")
                        + (" interrupted: not reached" if r.interrupted else ""))
        for host, text in self.warnings:
            self._print(f"{self._paint('WARNING', 'WARNING')} {host}: {text}")
        with self._lock:
            self._done = True

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, r in self.recaps.items() if r.bad]
