"""The certificate column of `invoke status` (roles/probes/status.py `certificate_expiry`): which certificate an
http route answers with, and what status says when it is not there (yet)."""

from __future__ import annotations

import dataclasses

import pytest

from pitunnel.inventory import AcmeSpec, Inventory, TunnelSpec, VpsSpec
from pitunnel.roles.probes.status import certificate_expiry
from pitunnel.roles.vps.acme import AcmeFound, CertState
from tests.unit.test_roles_pi import inv, keys  # noqa: F401 (fixtures: the Pi role's inventory)

ACME = AcmeSpec(email="ops@example.com")
LIVE = CertState(server="https://acme.example/dir", live=True, kept=False, not_after="Mar  1 12:00:00 2027 GMT")


def web(inv: Inventory, **changes: object) -> TunnelSpec:
    tunnel = next(t for t in inv.pis["alpha"].tunnels if t.kind == "http")
    return dataclasses.replace(tunnel, **changes)  # type: ignore[arg-type]


def vps(inv: Inventory, **changes: object) -> VpsSpec:
    return dataclasses.replace(inv.vps["main"], **changes)  # type: ignore[arg-type]


def test_a_live_acme_certificate_shows_its_expiry(inv: Inventory) -> None:  # noqa: F811
    on = vps(inv, acme=ACME, public_name="Vps.Example.COM.")
    assert certificate_expiry(on, web(inv), AcmeFound({"vps.example.com": LIVE})) == LIVE.not_after
    named = web(inv, server_name="cam.example.com", path=None)
    assert certificate_expiry(on, named, AcmeFound({"cam.example.com": LIVE, "vps.example.com":
                              dataclasses.replace(LIVE, not_after="other")})) == LIVE.not_after
    unknown = dataclasses.replace(LIVE, not_after="")
    assert certificate_expiry(on, web(inv), AcmeFound({"vps.example.com": unknown})) == "?"


@pytest.mark.parametrize("found", [AcmeFound(), AcmeFound({"vps.example.com": dataclasses.replace(LIVE, live=False)}),
                                   AcmeFound({"other.example.com": LIVE})])
def test_an_acme_route_without_its_live_certificate_has_none_yet(inv: Inventory, found: AcmeFound) -> None:  # noqa: F811
    assert certificate_expiry(vps(inv, acme=ACME, public_name="vps.example.com"), web(inv), found) == "none yet"


def test_a_hand_given_certificate_shows_its_own_expiry_and_a_plain_route_a_dash(inv: Inventory) -> None:  # noqa: F811
    given = vps(inv, tls_certificate="/etc/ssl/vps.pem", tls_key="/etc/ssl/vps.key")
    assert certificate_expiry(given, web(inv), AcmeFound(given_not_after="Jan  2 00:00:00 2027 GMT")) == \
        "Jan  2 00:00:00 2027 GMT"
    assert certificate_expiry(given, web(inv), AcmeFound()) == "?"
    wildcard = web(inv, server_name="*.example.com", path=None)  # http-01 cannot prove a wildcard: no ACME name
    assert certificate_expiry(vps(inv, acme=ACME, public_name="vps.example.com"), wildcard,
                              AcmeFound({"vps.example.com": LIVE})) == "-"
    assert certificate_expiry(vps(inv), web(inv), AcmeFound({"vps.example.com": LIVE})) == "-"


def test_a_row_in_status_json_says_up_down_or_unknown_and_its_certificate_or_null() -> None:
    from pitunnel.roles.probes.status import TunnelStatus

    up = TunnelStatus("alpha", "web", "127.0.0.1:20080", True, "active", "today", 3, "now", 1, certificate="Mar 1",
                      vps="main")
    assert up.document() == {"pi": "alpha", "tunnel": "web", "vps": "main", "listen": "127.0.0.1:20080", "state": "up",
                             "unit": "active", "since": "today", "reconnects": 2, "ssh_starts": 3, "last_connect": "now",
                             "unit_restarts": 1, "last_error": None, "certificate_expires": "Mar 1", "session_since": None}
    down = TunnelStatus("alpha", "ssh", "0.0.0.0:20022", False, "failed", "-", 0, "-", 0, last_error="refused")
    assert (down.document()["state"], down.document()["last_error"], down.document()["certificate_expires"],
            down.document()["reconnects"]) == ("down", "refused", None, 0)
    unread = TunnelStatus("alpha", "ssh", "0.0.0.0:20022", False, None, None, None, None, None, known=False)
    assert (unread.document()["state"], unread.document()["reconnects"]) == ("unknown", None)
