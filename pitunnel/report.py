"""What a run prints: a line per operation per host, diffs on request, and Ansible's recap."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field

COLOURS = {"ok": "32", "changed": "33", "failed": "31", "unreachable": "31", "skipped": "36", "would change": "33",
           "WARNING": "1;35"}


@dataclass
class Recap:
    ok: int = 0
    changed: int = 0
    unreachable: int = 0
    failed: int = 0
    skipped: int = 0
    round_trips: int = 0

    @property
    def bad(self) -> bool:
        return bool(self.failed or self.unreachable)


@dataclass
class Reporter:
    colour: bool = field(default_factory=lambda: sys.stdout.isatty())
    show_diff: bool = False
    quiet: bool = False
    recaps: dict[str, Recap] = field(default_factory=dict)
    warnings: list[tuple[str, str]] = field(default_factory=list)  # (host, text), repeated under the recap
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def recap(self, host: str) -> Recap:
        with self._lock:
            return self.recaps.setdefault(host, Recap())

    def line(self, host: str, status: str, title: str, reason: str = "", diff: str = "") -> None:
        recap = self.recap(host)
        with self._lock:
            field_name = {"would change": "changed"}.get(status, status)
            setattr(recap, field_name, getattr(recap, field_name) + 1)
            if self.quiet and status == "ok":
                return
            tag = self._paint(f"{status:<12}", status)
            print(f"{tag} {host:<10} {title}" + (f" - {reason}" if reason else ""), flush=True)
            if diff and self.show_diff:
                print(diff.rstrip("\n"), flush=True)

    def note(self, host: str, text: str) -> None:
        with self._lock:
            if not self.quiet:
                print(f"{'':<12} {host:<10} {text}", flush=True)

    def warn(self, host: str, text: str) -> None:
        """Something the owner should change although nothing failed: printed even when quiet, and again
        under the recap so it is the last thing read."""
        with self._lock:
            self.warnings.append((host, text))
            tag = self._paint(f"{'WARNING':<12}", "WARNING")
            print(f"{tag} {host:<10} {text}", flush=True)

    def _paint(self, text: str, status: str) -> str:
        return f"\033[{COLOURS.get(status, '0')}m{text}\033[0m" if self.colour else text

    def print_recap(self) -> None:
        print("\nPLAY RECAP " + "*" * 60)
        for host, r in self.recaps.items():
            name = self._paint(f"{host:<26}", "failed" if r.bad else ("changed" if r.changed else "ok"))
            print(f"{name} : ok={r.ok:<4} changed={r.changed:<4} unreachable={r.unreachable:<4} "
                  f"failed={r.failed:<4} skipped={r.skipped:<4} round_trips={r.round_trips}")
        for host, text in self.warnings:
            print(f"{self._paint('WARNING', 'WARNING')} {host}: {text}")

    @property
    def failed_hosts(self) -> list[str]:
        return [h for h, r in self.recaps.items() if r.bad]
