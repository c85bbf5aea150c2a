"""What `Play.connect_ahead` dials before a run's first step: every selected Pi and its VPS and nothing else,
no host that already failed, at most --forks at once, and in threads that never keep pitunnel from exiting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from pitunnel.inventory import Inventory
from pitunnel.play import Options, Play
from pitunnel.report import Reporter
from tests.unit.fake_hosts import FakeHost, load
from tests.unit.test_site import INVENTORY  # main and spare; alpha and beta on main, gamma on spare

ROOT = Path(__file__).resolve().parents[2]


class Dials:
    """What the hosts' connections saw: who was dialled, and how many were being opened at most at once.
    A dial waits for `gate` before it finishes (set from the start unless a test holds it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate.set()
        self.dialled: list[str] = []
        self.opening = self.most = 0

    def host(self, name: str) -> FakeHost:
        host = FakeHost(name)
        host.connection = self._dial(name)  # type: ignore[method-assign]
        return host

    def _dial(self, name: str) -> Callable[[], SimpleNamespace]:
        def connection() -> SimpleNamespace:
            with self.lock:
                self.dialled.append(name)
                self.opening += 1
                self.most = max(self.most, self.opening)
            self.gate.wait(10)
            with self.lock:
                self.opening -= 1
            return SimpleNamespace()
        return connection

    def wait_for(self, count: int, within: float = 5) -> None:
        deadline = time.monotonic() + within
        while len(self.dialled) < count and time.monotonic() < deadline:
            time.sleep(0.01)


def play_of(inv: Inventory, dials: Dials, **options: object) -> Play:
    return Play(inv, Options(**options), Reporter(colour=False),  # type: ignore[arg-type]
                {name: dials.host(name) for name in [*inv.vps, *inv.pis]})  # type: ignore[misc]


def dialled_by(play: Play) -> None:
    """connect_ahead, and every dial it started run to its end."""
    before = set(threading.enumerate())
    play.connect_ahead()
    for thread in set(threading.enumerate()) - before:
        thread.join(10)


def test_the_selected_pis_and_their_vpses_are_dialled_and_no_other_host(tmp_path: Path) -> None:
    dials = Dials()
    dialled_by(play_of(load(tmp_path, INVENTORY), dials, limit=frozenset({"gamma"})))
    assert sorted(dials.dialled) == ["gamma", "spare"]  # not main, alpha nor beta
    everyone = Dials()
    dialled_by(play_of(load(tmp_path, INVENTORY), everyone))
    assert sorted(everyone.dialled) == ["alpha", "beta", "gamma", "main", "spare"]


def test_a_host_that_failed_already_is_not_dialled_again(tmp_path: Path) -> None:
    dials = Dials()
    play = play_of(load(tmp_path, INVENTORY), dials)
    play.failed.update({"main", "beta"})
    dialled_by(play)
    assert sorted(dials.dialled) == ["alpha", "gamma", "spare"]


@pytest.mark.parametrize("forks", [1, 3])
def test_at_most_forks_connections_are_being_opened_at_once_and_the_rest_follow(tmp_path: Path, forks: int) -> None:
    """With --forks N, N hosts are dialled together (not one after the other), the N+1th only once one of them
    is through; in the end every host is dialled."""
    dials = Dials()
    dials.gate.clear()  # every dial hangs until the test lets them through
    play = play_of(load(tmp_path, INVENTORY), dials, forks=forks)
    before = set(threading.enumerate())
    play.connect_ahead()
    dials.wait_for(forks)
    time.sleep(0.2)  # time for a dial beyond --forks to start, if one could
    assert (len(dials.dialled), dials.opening) == (forks, forks)
    dials.gate.set()
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
    assert dials.most == forks and sorted(dials.dialled) == ["alpha", "beta", "gamma", "main", "spare"]


def test_a_connection_still_being_opened_does_not_keep_pitunnel_from_exiting(tmp_path: Path) -> None:
    """A host that never answers (its dial hangs) must not hold the process once the run is over (after a
    Ctrl-C, say): the run's last word is the recap, and then it exits."""
    script = textwrap.dedent(f"""
        import threading
        from pathlib import Path
        from types import SimpleNamespace
        from pitunnel.play import Options, Play
        from pitunnel.report import Reporter
        from tests.unit.fake_hosts import FakeHost, load
        from tests.unit.test_site import INVENTORY

        inv = load(Path({str(tmp_path)!r}), INVENTORY)
        hosts = {{name: FakeHost(name) for name in [*inv.vps, *inv.pis]}}
        dialling = threading.Event()
        def hang() -> SimpleNamespace:
            dialling.set()
            threading.Event().wait()  # never answers
            return SimpleNamespace()
        hosts["alpha"].connection = hang
        Play(inv, Options(limit=frozenset({{"alpha"}})), Reporter(colour=False), hosts).connect_ahead()
        assert dialling.wait(10)
        print("done", flush=True)
        """)
    ended = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=15)
    assert (ended.returncode, ended.stdout) == (0, "done\n"), ended.stderr


def test_the_dials_run_in_daemon_threads_named_after_their_host(tmp_path: Path) -> None:
    """The same in this process (a mutation run sees it; the test above runs a Python of its own): every thread
    connect_ahead starts is a daemon thread, so a dial that hangs never holds pitunnel at exit."""
    dials = Dials()
    dials.gate.clear()  # the dials hang: their threads are there to look at
    before = set(threading.enumerate())
    play_of(load(tmp_path, INVENTORY), dials, limit=frozenset({"gamma"})).connect_ahead()
    started = set(threading.enumerate()) - before
    try:
        assert sorted((t.name, t.daemon) for t in started) == [("connect-gamma", True), ("connect-spare", True)]
    finally:
        dials.gate.set()
        for thread in started:
            thread.join(10)
