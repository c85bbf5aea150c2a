"""Shared test fixtures: the lab, brought up once per need and always torn down."""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RELEASE = os.environ.get("PITUNNEL_RELEASE", "bookworm")


def require_lab() -> None:
    """Lab tests need root and systemd-nspawn: skip with the reason outside CI, fail in CI."""
    reason = None
    if os.geteuid() != 0:
        reason = "lab tests need root (they boot containers and make bridges)"
    elif shutil.which("systemd-nspawn") is None or shutil.which("debootstrap") is None:
        reason = "lab tests need systemd-container and debootstrap (run scripts/setup.sh)"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run them", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab_inventory() -> Path:
    from lab import INVENTORY

    return INVENTORY


@pytest.fixture(scope="session", autouse=True)
def _lab_teardown_at_end(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test left up, the session ends with the lab gone."""
    yield
    if os.geteuid() == 0 and any(item.get_closest_marker("lab") for item in request.session.items):
        import lab

        lab.down()


def lab_up(pis: int, *, fresh: bool = True, vpses: int = 1) -> "object":
    import lab

    require_lab()
    return lab.up(pis=pis, release=RELEASE, fresh=fresh, vpses=vpses)


# what a failed lab test shows of each host it ran on: failed units and pitunnel's own journal lines (CI
# keeps only the test's output; a restart that fails says "see journalctl" and nothing more)
JOURNAL_SCRIPT = ("systemctl list-units --failed --plain --no-legend --no-pager; "
                  "journalctl -q --no-pager -o short-precise -n 20 -u 'pitunnel*'; "
                  "echo '-- systemd warnings'; journalctl -q --no-pager -o short-precise -n 5 -p warning _PID=1")


def lab_journals() -> str:
    import lab

    parts = []
    hosts = lab.status()
    if not hosts:
        return "the lab is down"
    for host in hosts:
        if not host.running:
            parts.append(f"== {host.name}: not running")
            continue
        try:
            done = lab.exec_in(host.name, JOURNAL_SCRIPT, check=False, timeout=15)
            parts.append(f"== {host.name} ({host.systemd})\n{done.stdout.strip()}")
        except Exception as error:  # a diagnosis must never hide the failure it explains
            parts.append(f"== {host.name}: no journal ({error})")
    return "\n".join(parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                               ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and call.when == "call" and item.get_closest_marker("lab") and os.geteuid() == 0:
        try:
            report.sections.append(("lab journals (failed units, pitunnel, systemd)", lab_journals()))
        except Exception as error:
            report.sections.append(("lab journals", f"none: {error}"))
    return report
