"""Shared test fixtures: the lab, brought up once per need and always torn down."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
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
