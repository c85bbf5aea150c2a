"""`invoke status`'s rows of one Pi as the table shows them: a Pi whose own tunnel runs is shown by its own unit
even while its bootstrap tunnel is still up, a waiting enrolled Pi's row, and which last errors are printed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitunnel.inventory import Inventory
from pitunnel.roles.probes import status
from tests.unit.fake_hosts import FakeHost, load, play_on, sessions_holding
from tests.unit.test_roles_pi import inv, keys  # noqa: F401 (fixtures: the Pi role's inventory)

ERROR = "2026-11-30T09:10:00+0000 pi autossh[9]: ssh exited with error status 255; restarting ssh"


def rows_of(inv: Inventory, out: str) -> list[status.TunnelStatus]:  # noqa: F811
    host = FakeHost("alpha", commands=[("systemctl show", out)])
    return status.status_pi(host, inv.pis["alpha"].first_path, frozenset({"0.0.0.0:20022"}))  # type: ignore[arg-type]


def test_a_pi_whose_own_unit_is_active_shows_it_and_its_last_error_while_the_bootstrap_is_still_up(
        inv: Inventory) -> None:  # noqa: F811
    rows = rows_of(inv, f"NRestarts=1\nActiveState=active\nActiveEnterTimestamp=today\nSshStarts=2\nLastStart=now\n"
                        f"LastError={ERROR}\nBootstrap=active\n")
    assert [(r.tunnel, r.up, r.unit, r.last_error) for r in rows] == [("ssh", True, "active", ERROR),
                                                                      ("web", False, "active", ERROR)]


def test_a_waiting_enrolled_pis_row_shows_a_dash_for_what_has_no_value_yet(
        inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    rows = rows_of(inv, "NRestarts=0\nActiveState=inactive\nActiveEnterTimestamp=\nSshStarts=0\nLastStart=\n"
                        "Bootstrap=active\n")
    status.print_status(rows[:1])
    out = capsys.readouterr().out.splitlines()
    assert out[2].split() == ["alpha", "ssh", "main", "0.0.0.0:20022", "UP", "bootstrap", "-", "?", "-", "?", "-"]
    assert out[3:] == [f"alpha/ssh via main: {status.WAITING}"]


def test_the_last_error_of_a_tunnel_that_is_up_again_is_not_printed(capsys: pytest.CaptureFixture[str]) -> None:
    status.print_status([status.TunnelStatus("alpha", "ssh", "0.0.0.0:20022", True, "active", "today", 3, "now", 1,
                                             vps="main", last_error=ERROR)])
    assert len(capsys.readouterr().out.splitlines()) == 3  # the blank line, the header, the row


def test_status_shows_the_certificate_an_http_route_answers_with_and_a_dash_for_ssh(tmp_path: Path) -> None:
    inv = load(tmp_path, """
        vps:
          main: {address: 203.0.113.1, tls_certificate: /etc/ssl/vps.pem, tls_key: /etc/ssl/vps.key}
        pis:
          alpha:
            address: 10.0.0.2
            tunnels:
              ssh: {type: ssh, remote_port: 20022}
              web: {type: http, local_port: 8080, remote_port: 20080, path: /alpha/}
        """)
    vps = FakeHost("main", [("ss -Htln", sessions_holding("LISTEN 0 128 127.0.0.1:20080 0.0.0.0:*\n")),
                            ("GIVEN|", "GIVEN|Mar  1 12:00:00 2027 GMT\n")])
    up = "NRestarts=0\nActiveState=active\nActiveEnterTimestamp=since\nSshStarts=1\nLastStart=last\n"
    rows = status.status(play_on(inv, {"main": vps, "alpha": FakeHost("alpha", commands=[("systemctl show", up)])}))  # type: ignore[dict-item]
    assert [(r.tunnel, r.up, r.certificate) for r in rows] == [("ssh", False, "-"),
                                                              ("web", True, "Mar  1 12:00:00 2027 GMT")]
