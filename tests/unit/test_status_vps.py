"""`invoke status` from the VPSes alone (issue 27): one read of each VPS gives every tunnel's state and since when
its session holds it, with no Pi login; the Pis are read when asked, or for a small selection."""

from __future__ import annotations

import dataclasses

import pytest

from pitunnel.inventory import Inventory
from pitunnel.remote import HostCannotRun, Result
from pitunnel.roles.probes import status
from tests.unit.fake_hosts import FakeHost, play_on
from tests.unit.test_roles_pi import inv, keys  # noqa: F401 (fixtures: the Pi role's inventory)

SS = """NOW 1796554800
LISTEN 0 128 0.0.0.0:20022 0.0.0.0:* users:(("sshd",pid=4242,fd=9))
LISTEN 0 128 127.0.0.1:20080 0.0.0.0:* users:(("sshd",pid=4242,fd=11),("sshd",pid=9,fd=3))
LISTEN 0 128 0.0.0.0:12345 0.0.0.0:* users:(("sshd",pid=1,fd=3))
LISTEN 0 128 127.0.0.1:20023 0.0.0.0:*
P 4242 3600
P 5000 10
"""


def test_since_when_each_listener_is_held_comes_from_its_sessions_process() -> None:
    held = status.held_listeners(SS)
    assert held.listeners == {"0.0.0.0:20022", "127.0.0.1:20080"}  # sshd's own 12345 and an unowned one: not sessions
    assert held.since == {"0.0.0.0:20022": "2026-12-06 10:00:00 UTC", "127.0.0.1:20080": "2026-12-06 10:00:00 UTC"}
    clockless = status.held_listeners(SS.replace("NOW 1796554800\n", ""))
    assert clockless.listeners == held.listeners and clockless.since == {}  # no clock: no time made up
    assert status.held_listeners("") == status.Held(frozenset(), {})


def test_a_listener_held_by_another_process_is_not_the_tunnel() -> None:
    """Another process on a tunnel's port (as when it took the port while the Pi was away) is not that Pi, and the
    session's own pid counts wherever ss lists it among the holders."""
    other = SS.replace('users:(("sshd",pid=4242,fd=9))', 'users:(("python3",pid=5001,fd=3))')
    assert status.held_listeners(other).listeners == {"127.0.0.1:20080"}
    later = SS.replace('("sshd",pid=4242,fd=11),("sshd",pid=9,fd=3)', '("sshd",pid=9,fd=3),("sshd",pid=4242,fd=11)')
    assert status.held_listeners(later).since["127.0.0.1:20080"] == "2026-12-06 10:00:00 UTC"


VPS_ANSWERS = [("ss -Htlnp", SS)]


def test_a_fleet_past_the_threshold_is_read_on_its_vps_alone(inv: Inventory, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(status, "PI_DETAILS_UP_TO", 1)  # two Pis: past it
    hosts = {"main": FakeHost("main", VPS_ANSWERS), "alpha": FakeHost("alpha"), "beta": FakeHost("beta")}
    rows = status.status(play_on(inv, hosts))  # type: ignore[arg-type]
    assert hosts["alpha"].scripts == [] and hosts["beta"].scripts == []  # no Pi login
    assert hosts["main"].round_trips == 1
    assert [(r.pi, r.tunnel, r.up, r.known, r.session_since) for r in rows] == [
        ("alpha", "ssh", True, True, "2026-12-06 10:00:00 UTC"), ("alpha", "web", True, True, "2026-12-06 10:00:00 UTC"),
        ("beta", "ssh", False, True, None)]
    document = rows[2].document()
    assert (document["state"], document["unit"], document["since"], document["unit_restarts"], document["reconnects"],
            document["session_since"]) == ("down", None, None, None, None, None)  # the Pi's own columns: unknown
    assert status.is_down(rows[2]) and not status.is_down(rows[0])
    status.print_status(rows)
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["pi", "tunnel", "vps", "listen", "on", "VPS", "state", "session", "since", "certificate",
                              "expires"]
    assert out[2].split() == ["alpha", "ssh", "main", "0.0.0.0:20022", "UP", "2026-12-06", "10:00:00", "UTC", "-"]
    assert out[4].split() == ["beta", "ssh", "main", "127.0.0.1:20023", "DOWN", "-", "-"]
    assert out[5] == ("2 Pis as their VPSes see them; `status --pis` also logs in to each for its unit, ssh starts, "
                      "restarts and last error (-l to pick some)")


UNIT = ("NRestarts=1\nActiveState=active\nActiveEnterTimestamp=Sun 2026-12-06 09:00:01 UTC\nSshStarts=2\n"
        "LastStart=2026-12-06T09:00:01+0000\nLastError=\n")


@pytest.mark.parametrize("asked", [None, True])
def test_a_small_fleet_or_pis_asked_reads_each_pi_as_before(inv: Inventory, asked: bool | None,  # noqa: F811
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"main": FakeHost("main", VPS_ANSWERS), "alpha": FakeHost("alpha", commands=[("systemctl show", UNIT)]),
             "beta": FakeHost("beta", commands=[("systemctl show", UNIT)])}
    rows = status.status(play_on(inv, hosts), asked)  # type: ignore[arg-type]
    assert len(hosts["alpha"].scripts) == 1 and len(hosts["beta"].scripts) == 1
    assert [(r.pi, r.tunnel, r.up, r.unit, r.since, r.unit_restarts, r.session_since) for r in rows] == [
        ("alpha", "ssh", True, "active", "Sun 2026-12-06 09:00:01 UTC", 1, "2026-12-06 10:00:00 UTC"),
        ("alpha", "web", True, "active", "Sun 2026-12-06 09:00:01 UTC", 1, "2026-12-06 10:00:00 UTC"),
        ("beta", "ssh", False, "active", "Sun 2026-12-06 09:00:01 UTC", 1, None)]
    status.print_status(rows)
    assert capsys.readouterr().out.splitlines()[1].split()[:7] == ["pi", "tunnel", "vps", "listen", "on", "VPS", "state"]


def test_an_unread_vps_leaves_its_tunnels_unknown(inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(status, "PI_DETAILS_UP_TO", 0)
    path = inv.pis["alpha"].first_path
    assert [(r.up, r.known, r.pi_read) for r in status.seen_by_vps(path, None)] == [(False, False, False)] * 2
    assert not status.is_down(status.seen_by_vps(path, None)[0])


def test_a_tunnel_whose_vps_was_not_read_shows_a_question_mark_in_the_vps_view(
        inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    status.print_vps_view(status.seen_by_vps(inv.pis["alpha"].first_path, None))
    out = capsys.readouterr().out.splitlines()
    assert [line.split() for line in out[2:4]] == [["alpha", "ssh", "main", "0.0.0.0:20022", "?", "-", "-"],
                                                  ["alpha", "web", "main", "127.0.0.1:20080", "?", "-", "-"]]


@pytest.mark.parametrize(("threshold", "asked", "read"), [(2, None, True), (5, False, False), (1, True, True)])
def test_the_pis_are_read_up_to_the_threshold_and_pis_too_overrides_it(inv: Inventory,  # noqa: F811
                                                                       monkeypatch: pytest.MonkeyPatch, threshold: int,
                                                                       asked: bool | None, read: bool) -> None:
    """At most PI_DETAILS_UP_TO Pis (here two, exactly the threshold) are read one by one; `pis_too` says so
    whatever their number (False: the VPSes alone, as `status` on a fleet; True: `status --pis`)."""
    monkeypatch.setattr(status, "PI_DETAILS_UP_TO", threshold)
    hosts = {"main": FakeHost("main", VPS_ANSWERS), "alpha": FakeHost("alpha", commands=[("systemctl show", UNIT)]),
             "beta": FakeHost("beta", commands=[("systemctl show", UNIT)])}
    rows = status.status(play_on(inv, hosts), asked)  # type: ignore[arg-type]
    assert [len(hosts[pi].scripts) for pi in ("alpha", "beta")] == ([1, 1] if read else [0, 0])
    unit = "active" if read else None
    assert [(r.pi, r.tunnel, r.up, r.pi_read, r.unit) for r in rows] == [
        ("alpha", "ssh", True, read, unit), ("alpha", "web", True, read, unit), ("beta", "ssh", False, read, unit)]


def test_a_tunnel_down_on_its_pi_has_no_session_since_even_while_its_listener_is_still_held(
        inv: Inventory) -> None:  # noqa: F811
    failed = UNIT.replace("ActiveState=active", "ActiveState=failed")
    hosts = {"main": FakeHost("main", VPS_ANSWERS), "alpha": FakeHost("alpha", commands=[("systemctl show", failed)]),
             "beta": FakeHost("beta", commands=[("systemctl show", UNIT)])}
    rows = status.status(play_on(inv, hosts), True)  # type: ignore[arg-type]
    assert [(r.pi, r.tunnel, r.up, r.unit, r.session_since) for r in rows] == [
        ("alpha", "ssh", False, "failed", None), ("alpha", "web", False, "failed", None),
        ("beta", "ssh", False, "active", None)]
    assert rows[0].document()["session_since"] is None


def test_an_http_route_on_a_vps_with_acme_shows_its_certificate_state(inv: Inventory) -> None:  # noqa: F811
    from pitunnel.inventory import AcmeSpec
    main = dataclasses.replace(inv.vps["main"], acme=AcmeSpec(email="ops@example.com"), public_name="vps.example.com")
    acme = dataclasses.replace(inv, vps={"main": main})
    hosts = {"main": FakeHost("main", VPS_ANSWERS), "alpha": FakeHost("alpha"), "beta": FakeHost("beta")}
    rows = status.status(play_on(acme, hosts), False)  # type: ignore[arg-type]
    assert [(r.pi, r.tunnel, r.certificate) for r in rows] == [
        ("alpha", "ssh", "-"), ("alpha", "web", "none yet"), ("beta", "ssh", "-")]  # no certificate obtained yet


class CannotRun(FakeHost):
    """A Pi reached but unable to run a script (its /tmp full)."""

    def run(self, script: str, **_: object) -> Result:
        raise HostCannotRun(self.name, "mktemp: No space left on device")


def test_a_pi_that_cannot_run_a_script_leaves_the_other_pis_rows(inv: Inventory) -> None:  # noqa: F811
    hosts = {"main": FakeHost("main", VPS_ANSWERS), "alpha": FakeHost("alpha", commands=[("systemctl show", UNIT)]),
             "beta": CannotRun("beta")}
    rows = status.status(play_on(inv, hosts), True)  # type: ignore[arg-type]
    assert [(r.pi, r.tunnel, r.up) for r in rows if r.pi == "alpha"] == [("alpha", "ssh", True), ("alpha", "web", True)]


def test_the_sessions_are_the_tunnel_accounts_processes(inv: Inventory) -> None:  # noqa: F811
    """`ps -u pitunnel` (the VPS's tunnel account): another account's processes hold no tunnel."""
    hosts = {"main": FakeHost("main", [("ps -o pid=,etimes= -u pitunnel 2>", SS)]), "alpha": FakeHost("alpha"),
             "beta": FakeHost("beta")}
    rows = status.status(play_on(inv, hosts), False)  # type: ignore[arg-type]
    assert [(r.pi, r.tunnel, r.up, r.session_since) for r in rows] == [
        ("alpha", "ssh", True, "2026-12-06 10:00:00 UTC"), ("alpha", "web", True, "2026-12-06 10:00:00 UTC"),
        ("beta", "ssh", False, None)]
