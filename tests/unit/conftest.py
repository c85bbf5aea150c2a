"""What every unit test starts and ends with: no Ctrl-C left over from another test (a task interrupted in
a test sets the run's STOP, which ends every later play at once, whatever order the tests run in: mutmut
runs them in its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pitunnel.dial import STOP


@pytest.fixture(autouse=True)
def no_ctrl_c_left_over() -> Iterator[None]:
    STOP.clear()
    yield
    STOP.clear()
