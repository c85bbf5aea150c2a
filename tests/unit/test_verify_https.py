"""verify's HTTP probe over HTTPS, against real local servers: Nginx's HTTPS side played by an http.server with a
certificate made here (its own CA, a name, days left), Nginx's port 80 by a plain one, and the Pi's app reached
through a loopback sshd's direct-tcpip channel."""

from __future__ import annotations

import dataclasses
import datetime
import http.server
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pitunnel.inventory import Inventory, VpsSpec
from pitunnel.roles.probes import http_route
from pitunnel.roles.probes.http_route import Answer
from tests.unit.fake_hosts import FakeHost, connection_of, load
from tests.unit.sshd_fake import FakeSshd
from tests.unit.test_verify import APP, INVENTORY, Channels, Nginx, free_port, raw, tunnel

NAME = "cam.example.com"  # the alpha's `cam` route: basic auth behind an ACME certificate
ASKS = (401, b"auth", ('WWW-Authenticate: Basic realm="alpha"',))
REDIRECT = (308, b"", (f"Location: https://{NAME}/",))


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Path  # the CA's certificate: what settings.verify_ca_file names
    cert: Path  # the VPS's chain for `name`
    key: Path
    expires: float  # the certificate's notAfter, epoch seconds


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_pki(tmp: Path, name: str, days: float) -> Pki:
    """A CA of its own and a certificate for `name` it signed, valid `days` more (fractions too)."""
    now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(_name("pitunnel test CA")).issuer_name(_name("pitunnel test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=400))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    until = now + datetime.timedelta(days=days)
    leaf = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(until)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (tmp / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp / "chain.pem").write_bytes(leaf.public_bytes(pem))
    (tmp / "key.pem").write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))
    return Pki(tmp / "ca.pem", tmp / "chain.pem", tmp / "key.pem", until.timestamp())


def serving(pki: Pki) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key)
    return context


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    return load(tmp_path, INVENTORY, {"cam.htpasswd": "alice:$apr1$x$y\n"})


@pytest.fixture()
def servers() -> Iterator[list[Nginx]]:
    started: list[Nginx] = []
    yield started
    for n in started:
        n.server.shutdown()
        n.server.server_close()


def vps_at(inv: Inventory, https: Nginx, plain: Nginx | None) -> VpsSpec:
    """The inventory's VPS (an ACME certificate for cam.example.com) with its Nginx on loopback."""
    return dataclasses.replace(inv.vps["main"], address="127.0.0.1", https_port=https.port,
                               http_port=plain.port if plain else free_port())


def check(inv: Inventory, pki: Pki, https: Nginx, plain: Nginx | None, *, ca_file: Path | None = None,
          behind: bytes = raw(200, APP), local: bytes = raw(200, APP), **changes: object) -> tuple[bool, str, str]:
    pi_remote, vps_remote = FakeHost("alpha"), FakeHost("main")
    pi_remote.connection = connection_of(Channels(local))  # type: ignore[method-assign]
    vps_remote.connection = connection_of(Channels(behind))  # type: ignore[method-assign]
    return http_route.http_through(vps_at(inv, https, plain), inv.pis["alpha"], tunnel(inv, "alpha", "cam", **changes),
                                   pi_remote, vps_remote, ca_file)  # type: ignore[arg-type]


def day(expires: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(expires))


def test_a_route_with_tls_is_fetched_over_https_checked_and_https_only(
        inv: Inventory, tmp_path: Path, servers: list[Nginx]) -> None:
    pki = make_pki(tmp_path, NAME, 30)
    https, plain = Nginx(ASKS, tls=serving(pki)), Nginx(REDIRECT)
    servers += [https, plain]
    ok, detail, hint = check(inv, pki, https, plain, ca_file=pki.ca)
    digest = Answer(200, APP).digest
    assert (ok, hint) == (True, "")
    assert detail == (f'https://{NAME}:{https.port}/ (at 127.0.0.1): 401 from Nginx\'s basic auth (realm="alpha"); '
                      f"behind it, 127.0.0.1:20081 on main: HTTP 200, the same answer as on the Pi itself "
                      f"({len(APP)} bytes, sha256 {digest}); certificate valid until {day(pki.expires)} (30 days); "
                      f"plain HTTP: 308 to https://{NAME}/")
    assert https.seen == [("/", NAME)] and plain.seen == [("/", NAME)]  # as a browser that resolved the name


def test_without_basic_auth_the_answer_is_compared_then_the_certificate_and_port_80(
        inv: Inventory, tmp_path: Path, servers: list[Nginx]) -> None:
    pki = make_pki(tmp_path, NAME, 20)
    https, plain = Nginx((200, APP, ()), tls=serving(pki)), Nginx(REDIRECT)
    servers += [https, plain]
    ok, detail, _ = check(inv, pki, https, plain, ca_file=pki.ca, basic_auth_file=None)
    assert ok and detail.endswith(f"certificate valid until {day(pki.expires)} (20 days); plain HTTP: 308 to https://{NAME}/")
    assert ": HTTP 200, the same answer as on the Pi itself" in detail


@pytest.mark.parametrize(("days", "ok", "said"), [(14.2, True, "14 days"), (13.8, False, "14 days"), (3, False, "3 days")])
def test_a_certificate_with_less_than_14_days_left_fails(inv: Inventory, tmp_path: Path, servers: list[Nginx],
                                                         days: float, ok: bool, said: str) -> None:
    pki = make_pki(tmp_path, NAME, days)
    https, plain = Nginx(ASKS, tls=serving(pki)), Nginx(REDIRECT)
    servers += [https, plain]
    passed, detail, hint = check(inv, pki, https, plain, ca_file=pki.ca)
    assert passed == ok
    if ok:
        assert f"certificate valid until {day(pki.expires)} ({said});" in detail and hint == ""
    else:
        assert detail == f"https://{NAME}:{https.port}/ (at 127.0.0.1): the certificate for {NAME} expires {day(pki.expires)} (in {said})"
        assert hint == "renewal is overdue: on the VPS, `certbot renew` and `journalctl -u certbot` (or replace tls_certificate)"
        assert plain.seen == []  # port 80 is not asked once the certificate fails


@pytest.mark.parametrize(("answer", "said"), [
    ((200, APP, ()), "200 ''"),
    ((308, b"", (f"Location: http://{NAME}/",)), f"308 'http://{NAME}/'"),
    ((301, b"", (f"Location: https://{NAME}/",)), f"301 'https://{NAME}/'"),
], ids=["served-plain", "redirect-to-http", "not-308"])
def test_plain_http_must_answer_only_with_a_308_to_https(inv: Inventory, tmp_path: Path, servers: list[Nginx],
                                                         answer: tuple[int, bytes, tuple[str, ...]], said: str) -> None:
    pki = make_pki(tmp_path, NAME, 30)
    https, plain = Nginx(ASKS, tls=serving(pki)), Nginx(answer)
    servers += [https, plain]
    ok, detail, hint = check(inv, pki, https, plain, ca_file=pki.ca)
    assert not ok and detail == f"https://{NAME}:{https.port}/ (at 127.0.0.1): plain HTTP answers {said}, not a 308 to https"
    assert hint == "rerun provision-vps"


def test_nothing_on_port_80_fails(inv: Inventory, tmp_path: Path, servers: list[Nginx]) -> None:
    pki = make_pki(tmp_path, NAME, 30)
    https = Nginx(ASKS, tls=serving(pki))
    servers.append(https)
    ok, detail, hint = check(inv, pki, https, None, ca_file=pki.ca)
    assert not ok and detail.startswith(f"https://{NAME}:{https.port}/ (at 127.0.0.1): plain HTTP: [Errno 111]")
    assert hint == "Nginx does not answer on port 80: run provision-vps"


@pytest.mark.parametrize("case", ["another-name", "system-cas-only"])
def test_a_certificate_the_laptop_cannot_check_fails_the_handshake(inv: Inventory, tmp_path: Path,
                                                                   servers: list[Nginx], case: str) -> None:
    pki = make_pki(tmp_path, "other.example.com" if case == "another-name" else NAME, 30)
    https, plain = Nginx(ASKS, tls=serving(pki)), Nginx(REDIRECT)
    servers += [https, plain]
    ok, detail, hint = check(inv, pki, https, plain, ca_file=pki.ca if case == "another-name" else None)
    assert not ok and detail.startswith(f"https://{NAME}:{https.port}/ (at 127.0.0.1): [SSL: CERTIFICATE_VERIFY_FAILED]")
    assert ("Hostname mismatch" in detail) == (case == "another-name")
    assert hint == ("no valid certificate for this name: see provision-vps's certificate line "
                    "(or settings.verify_ca_file for a private CA)")
    assert https.seen == []


def test_the_context_checks_chain_and_name_against_the_ca_file_given(tmp_path: Path) -> None:
    pki = make_pki(tmp_path, NAME, 30)
    mine = http_route.tls_context(pki.ca)
    assert mine.verify_mode == ssl.CERT_REQUIRED and mine.check_hostname
    assert len(mine.get_ca_certs()) == 1 and "pitunnel test CA" in str(mine.get_ca_certs())
    system = http_route.tls_context(None)
    assert system.verify_mode == ssl.CERT_REQUIRED and system.check_hostname
    assert "pitunnel test CA" not in str(system.get_ca_certs())


def test_fetch_via_nginx_keeps_the_certificates_end_and_none_over_plain_http(inv: Inventory, tmp_path: Path,
                                                                            servers: list[Nginx]) -> None:
    pki = make_pki(tmp_path, NAME, 30)
    https, plain = Nginx((200, APP, ("X-Seen: yes",)), tls=serving(pki)), Nginx((200, b"plain", ()))
    servers += [https, plain]
    vps, route = vps_at(inv, https, plain), tunnel(inv, "alpha", "web")
    secure = http_route.fetch_via_nginx(vps, route, NAME, http_route.tls_context(pki.ca))
    assert (secure.status, secure.body, secure.header("x-seen"), secure.expires) == (200, APP, "yes", pki.expires)
    assert https.seen == [("/alpha/", NAME)]
    bare = http_route.fetch_via_nginx(vps, route, "pi.example.net")
    assert (bare.status, bare.body, bare.expires) == (200, b"plain", None) and plain.seen == [("/alpha/", "pi.example.net")]


def test_https_only_of_an_answer_without_a_certificate_date(inv: Inventory) -> None:
    vps = dataclasses.replace(inv.vps["main"], address="127.0.0.1", http_port=free_port())
    ok, how, hint = http_route.https_only(vps, tunnel(inv, "alpha", "cam"), NAME, Answer(200, APP))
    assert not ok and re.fullmatch(f"the certificate for {NAME} expired 1970-01-01 \\(2[0-9]{{4}} days ago\\)", how), how
    assert hint.startswith("renewal is overdue")


# ------------------------------------------------------------------- the Pi's own answer, through a real sshd


class App(http.server.BaseHTTPRequestHandler):
    """The Pi's app: answers each GET with the request line and headers it got, as JSON naming the Pi."""

    def do_GET(self) -> None:  # noqa: N802
        body = (b'{"pi": "alpha", "got": "' + self.requestline.encode() + b'", "host": "'
                + str(self.headers["Host"]).encode() + b'"}')
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_the_pis_answer_comes_through_an_ssh_channel_to_its_loopback() -> None:
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, args=(0.02,), daemon=True).start()
    sshd = FakeSshd(paramiko.ECDSAKey.generate())
    sshd.forwarding = True
    transport = paramiko.Transport(socket.create_connection(("127.0.0.1", sshd.port)))
    try:
        transport.connect(username="admin", password="login")
        answer = http_route.fetch_over_ssh(transport, app.server_address[1], NAME)
        assert (answer.status, answer.named, answer.header("content-type")) == (200, "alpha", "application/json")
        assert answer.body.endswith(b'"got": "GET / HTTP/1.1", "host": "cam.example.com"}')
        assert sshd.forwarded == [(("127.0.0.1", 0), ("127.0.0.1", app.server_address[1]))]
        with pytest.raises(paramiko.ChannelException):  # nothing listens there
            http_route.fetch_over_ssh(transport, free_port(), NAME)
    finally:
        transport.close()
        sshd.close()
        app.shutdown()
        app.server_close()


def test_behind_basic_auth_an_app_that_names_its_pi_passes_by_that_name(inv: Inventory, tmp_path: Path,
                                                                       servers: list[Nginx]) -> None:
    pki = make_pki(tmp_path, NAME, 30)
    https, plain = Nginx(ASKS, tls=serving(pki)), Nginx(REDIRECT)
    servers += [https, plain]
    ok, detail, _ = check(inv, pki, https, plain, ca_file=pki.ca, behind=raw(200, b'{"pi": "alpha", "t": 1}'),
                          local=raw(200, b'{"pi": "alpha", "t": 2}'))  # the time differs, the Pi is the same
    assert ok and "127.0.0.1:20081 on main: HTTP 200, answered as alpha, as on the Pi itself;" in detail


def test_nginx_that_accepts_and_never_answers_is_given_up_on_after_a_bounded_wait(
        inv: Inventory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over plain HTTP and over HTTPS (where the connection is dialled to the VPS's address, not the name's)."""
    dialled: list[tuple[tuple[str, int], object]] = []

    def dial(address: tuple[str, int], timeout: object = None, *rest: object) -> socket.socket:
        dialled.append((address, timeout))
        raise ConnectionRefusedError("refused")

    monkeypatch.setattr(socket, "create_connection", dial)
    vps = dataclasses.replace(inv.vps["main"], address="198.51.100.7", http_port=8080, https_port=8443)
    for tls in (None, http_route.tls_context(None)):
        with pytest.raises(ConnectionRefusedError):
            http_route.fetch_via_nginx(vps, tunnel(inv, "alpha", "cam"), NAME, tls)
    assert [address for address, _ in dialled] == [("198.51.100.7", 8080), ("198.51.100.7", 8443)]
    assert all(isinstance(wait, (int, float)) and 0 < wait <= 60 for _, wait in dialled), dialled


NOW = 1796554800.0  # 2026-12-06 10:00:00 UTC


@pytest.mark.parametrize(("left", "secure", "how"), [
    (14 * 86400, True, "certificate valid until 2026-12-20 (14 days); plain HTTP: 308 to https://cam.example.com/"),
    (13 * 86400, False, "the certificate for cam.example.com expires 2026-12-19 (in 13 days)"),
    (12 * 3600, False, "the certificate for cam.example.com expires 2026-12-06 (in 0 days)"),
    (0, False, "the certificate for cam.example.com expires 2026-12-06 (in 0 days)"),
    (-3 * 86400, False, "the certificate for cam.example.com expired 2026-12-03 (3 days ago)"),
])
def test_a_certificate_passes_with_cert_days_left_and_otherwise_says_when_it_expires(
        inv: Inventory, monkeypatch: pytest.MonkeyPatch, left: float, secure: bool, how: str) -> None:
    monkeypatch.setattr(http_route.time, "time", lambda: NOW)
    redirect = Answer(308, b"", (("Location", "https://cam.example.com/"),))
    monkeypatch.setattr(http_route, "fetch_via_nginx", lambda *_: redirect)
    front = Answer(200, APP, expires=NOW + left)
    ok, said, hint = http_route.https_only(inv.vps["main"], tunnel(inv, "alpha", "cam"), NAME, front)
    assert (ok, said) == (secure, how)
    assert hint == ("" if secure else "renewal is overdue: on the VPS, `certbot renew` and `journalctl -u certbot` "
                                      "(or replace tls_certificate)")
