"""`verify`'s checks of one path, and how they print."""

from __future__ import annotations

from dataclasses import dataclass, field

REACH = "reach "  # checks that fail because a host was out of reach: `verify` exits 4 for them, not 2


@dataclass
class Verdict:
    name: str
    passed: bool
    detail: str
    hint: str = ""
    warning: bool = False  # passed, but printed as WARN: something the owner should change


@dataclass
class PathReport:
    """The checks of one path: the Pi `pi` through its VPS `vps` (a Pi with two VPSes has two reports)."""

    pi: str
    checks: list[Verdict] = field(default_factory=list)
    vps: str = ""

    def add(self, name: str, passed: bool, detail: str, hint: str = "", *, warning: bool = False) -> None:
        self.checks.append(Verdict(name, passed, detail, "" if passed and not warning else hint, warning))

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


def print_reports(reports: list[PathReport]) -> None:
    for report in reports:
        via = f" via {report.vps}" if report.vps else ""
        print(f"\n{report.pi}{via}: {'PASS' if report.passed else 'FAIL'}")
        for c in report.checks:
            print(f"  {'FAIL' if not c.passed else 'WARN' if c.warning else 'PASS'}  {c.name:<42} {c.detail}")
            if c.hint:
                print(f"        hint: {c.hint}")
