"""verify_pi's HTTP check of one path with real servers on loopback: a route behind an ACME certificate from a
private CA (settings.verify_ca_file) passes, and Nginx silent on a route's HTTPS port is told apart on that
port whether the certificate is ACME's or hand-given."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType

from pitunnel.inventory import Inventory
from pitunnel.roles.probes import verify
from pitunnel.roles.probes.report import PathReport, Verdict
from tests.unit.fake_hosts import FakeHost, connection_of, load, play_on
from tests.unit.test_verify import APP, INVENTORY, Channels, Nginx, at, free_port, pi_host, raw, unit_says
from tests.unit.test_verify_https import ASKS, NAME, REDIRECT, make_pki, serving


def on_loopback(inv: Inventory, *, http: int, https: int, ca_file: Path | None = None, **vps: object) -> Inventory:
    """The inventory with its VPS's Nginx on loopback ports, and the laptop's CA file for private CAs."""
    main = dataclasses.replace(inv.vps["main"], address="127.0.0.1", http_port=http, https_port=https, **vps)  # type: ignore[arg-type]
    return dataclasses.replace(inv, vps=MappingProxyType({"main": main}),
                               settings=dataclasses.replace(inv.settings, verify_ca_file=ca_file))


def checks(inv: Inventory) -> dict[str, Verdict]:
    """verify_pi's checks of alpha's path through main: the app answers APP on the Pi and behind Nginx."""
    pi = pi_host("alpha", unit_says("enabled", "active", "active"))
    own = at(inv, inv.pis["alpha"])
    pi.target, pi.authenticate = own.target, own.authenticate  # type: ignore[attr-defined]
    pi.connection = connection_of(Channels(raw(200, APP)))  # type: ignore[method-assign]
    main = FakeHost("main")
    main.connection = connection_of(Channels(raw(200, APP)))  # type: ignore[method-assign]
    report = PathReport("alpha", vps="main")
    verify.verify_pi(play_on(inv, {"main": main, "alpha": pi}), pi, report, frozenset(), None)  # type: ignore[arg-type, dict-item]
    return {c.name: c for c in report.checks}


def test_a_route_behind_a_private_cas_certificate_passes_with_the_laptops_ca_file(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, NAME, 30)
    https, plain = Nginx(ASKS, tls=serving(pki)), Nginx(REDIRECT)
    try:
        inv = on_loopback(load(tmp_path, INVENTORY, {"cam.htpasswd": "alice:$apr1$x$y\n"}), http=plain.port,
                          https=https.port, ca_file=pki.ca)
        cam = checks(inv)["cam: http via nginx reaches alpha"]
    finally:
        for n in (https, plain):
            n.server.shutdown()
            n.server.server_close()
    assert cam.passed and cam.hint == "", cam.detail
    assert https.seen == [("/", NAME)]


def silent_https(tmp_path: Path, **vps: object) -> tuple[int, Verdict]:
    """Nginx answers on port 80 but nothing listens on the HTTPS port: the web route's check."""
    plain, port = Nginx(REDIRECT), free_port()
    try:
        inv = on_loopback(load(tmp_path, INVENTORY, {"cam.htpasswd": "alice:$apr1$x$y\n"}), http=plain.port, https=port,
                          public_name="localhost", **vps)
        return port, checks(inv)["web: http via nginx reaches alpha"]
    finally:
        plain.server.shutdown()
        plain.server.server_close()


def test_nginx_silent_on_the_https_port_of_an_acme_route_is_told_apart_on_that_port(tmp_path: Path) -> None:
    port, web = silent_https(tmp_path)
    assert not web.passed and web.hint == (f"127.0.0.1:{port} ([Errno 111] Connection refused): nothing listens on "
                                           f"port {port} of main: is the tunnel (or Nginx) up?")


def test_nginx_silent_on_the_https_port_of_a_hand_given_certificate_is_told_apart_on_that_port(tmp_path: Path) -> None:
    port, web = silent_https(tmp_path, acme=None, tls_certificate="/etc/c.pem", tls_key="/etc/k.pem")
    assert not web.passed and web.hint.startswith(f"127.0.0.1:{port} ([Errno 111] Connection refused): nothing listens")
