"""What `invoke status` makes of a Pi's units (roles/probes/status.py, unit.py): each tunnel up only with its
unit active and its listener on the VPS, the values read by name, and the table as printed."""

from __future__ import annotations

import pytest

from pitunnel.inventory import Inventory
from pitunnel.roles.probes import status
from pitunnel.roles.probes.unit import tunnel_fact
from tests.unit.fake_hosts import FakeHost
from tests.unit.test_roles_pi import inv, keys  # noqa: F401 (fixtures: the Pi role's inventory)


def test_status_shows_each_tunnel_up_only_with_its_unit_active_and_its_listener(inv: Inventory) -> None:
    out = ("NRestarts=4\nActiveState=active\nActiveEnterTimestamp=Mon 2026-11-30 09:00:00 UTC\nSshStarts=7\n"
           "LastStart=2026-11-30T09:10:00+0000\nLastError=\n")
    host = FakeHost("alpha", commands=[("systemctl show", out)])
    rows = status.status_pi(host, inv.pis["alpha"].first_path, frozenset({"0.0.0.0:20022"}))  # type: ignore[arg-type]
    assert [(r.tunnel, r.listen, r.up) for r in rows] == [("ssh", "0.0.0.0:20022", True), ("web", "127.0.0.1:20080", False)]
    assert (rows[0].pi, rows[0].unit, rows[0].since, rows[0].ssh_starts, rows[0].last_start, rows[0].unit_restarts) == (
        "alpha", "active", "Mon 2026-11-30 09:00:00 UTC", 7, "2026-11-30T09:10:00+0000", 4)
    assert {r.vps for r in rows} == {"main"} and host.scripts == [tunnel_fact("main").script]
    down = FakeHost("alpha", commands=[("systemctl show", "NRestarts=0\nActiveState=failed\nActiveEnterTimestamp=\n"
                                                            "SshStarts=0\nLastStart=\n")])
    (first, _) = status.status_pi(down, inv.pis["alpha"].first_path, frozenset({"0.0.0.0:20022"}))  # type: ignore[arg-type]
    assert not first.up and first.unit == "failed" and first.since == "-" and first.last_start == "-"
    (blank, _) = status.status_pi(FakeHost("alpha"), inv.pis["alpha"].first_path, frozenset())  # type: ignore[arg-type]
    assert (blank.up, blank.ssh_starts, blank.unit_restarts, blank.since, blank.unit, blank.last_start) == (
        False, 0, 0, "-", "", "-")
    assert "systemctl show pitunnel@main.service " in tunnel_fact("main").script
    assert tunnel_fact("spare").script.count("journalctl -u pitunnel@spare.service ") == 3


def test_status_table(capsys: pytest.CaptureFixture[str]) -> None:
    status.print_status([status.TunnelStatus("alpha", "ssh", "0.0.0.0:20022", True, "active", "today", 3, "now", 1,
                                                   vps="main"),
                            status.TunnelStatus("beta", "ssh", "127.0.0.1:20023", False, "failed", "-", 0, "-", 0,
                                                   vps="spare", last_error="refused")])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == ""
    assert out[1].split() == ["pi", "tunnel", "vps", "listen", "on", "VPS", "state", "unit", "up", "since", "ssh",
                              "starts", "last", "(re)connect", "unit", "restarts", "certificate", "expires"]
    assert out[2].split() == ["alpha", "ssh", "main", "0.0.0.0:20022", "UP", "active", "today", "3", "now", "1", "-"]
    assert out[3].split() == ["beta", "ssh", "spare", "127.0.0.1:20023", "DOWN", "failed", "-", "0", "-", "0", "-"]
    assert out[4:] == ["beta/ssh via spare: last error: refused"]  # only a tunnel that is down
    assert out[2].index("UP") == out[1].index("state") and out[2].index("today") == out[1].index("up since")


def test_what_status_could_not_read_is_unknown_not_zero(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    path = next(iter(inv.pis.values())).paths()[0]
    row = status.unreached(path, None, "no answer within 5s")[0]
    assert (row.known, row.unit, row.since, row.ssh_starts, row.last_start, row.unit_restarts, row.reconnects) == (
        False, None, None, None, None, None, None)
    document = row.document()  # a monitor must not read a restart count of 0 or a time of "-" as a fact
    assert [document[k] for k in ("state", "unit", "since", "reconnects", "ssh_starts", "last_connect",
                                  "unit_restarts")] == ["unknown", None, None, None, None, None, None]
    status.print_status([row])
    table = capsys.readouterr().out.splitlines()[2].split()
    assert table[4:10] == ["?", "?", "?", "?", "?", "?"] and "0" not in table


def test_the_tunnel_state_is_read_by_name_whatever_the_order_or_a_stray_line() -> None:
    out = ("ActiveEnterTimestamp=Mon 2026-11-30 09:00:00 UTC\nFailed to get properties: Access denied\n"
           "LastError=2026-11-30T09:10:00+0000 pi autossh[9]: ssh exited with error status 255; restarting ssh\n"
           "NRestarts=2\nActiveState=activating\nSshStarts=5\nLastStart=2026-11-30T09:10:00+0000\n")
    state = tunnel_fact("main").process(out)
    assert (state.active, state.since, state.restarts, state.ssh_starts, state.last_start) == (
        "activating", "Mon 2026-11-30 09:00:00 UTC", 2, 5, "2026-11-30T09:10:00+0000")
    assert state.last_error == "2026-11-30T09:10:00+0000 pi autossh[9]: ssh exited with error status 255; restarting ssh"


def test_an_enrolled_pi_waiting_for_provision_pi(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    """Its own unit not there yet, its bootstrap tunnel active: up as far as the VPS listens, waiting."""
    out = "NRestarts=0\nActiveState=inactive\nActiveEnterTimestamp=\nSshStarts=0\nLastStart=\nBootstrap=active\n"
    rows = status.status_pi(FakeHost("alpha", commands=[("systemctl show", out)]), inv.pis["alpha"].first_path,  # type: ignore[arg-type]
                            frozenset({"0.0.0.0:20022"}))
    assert [(r.tunnel, r.up, r.unit) for r in rows] == [("ssh", True, "bootstrap"), ("web", False, "bootstrap")]
    assert not any(status.is_down(r) for r in rows[:1]) and rows[0].last_error == status.WAITING
    status.print_status(rows[:1])
    assert f"alpha/ssh via main: {status.WAITING}" in capsys.readouterr().out
    assert "systemctl is-active pitunnel-bootstrap@main.service" in tunnel_fact("main").script
    gone = out.replace("Bootstrap=active", "Bootstrap=inactive")  # retired, and its own unit down: down
    (first, _) = status.status_pi(FakeHost("alpha", commands=[("systemctl show", gone)]),  # type: ignore[arg-type]
                                  inv.pis["alpha"].first_path, frozenset({"0.0.0.0:20022"}))
    assert not first.up and first.unit == "inactive"
