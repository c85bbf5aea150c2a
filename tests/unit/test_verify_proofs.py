"""What verify counts as proof: an HTTP answer through the VPS compared with the Pi's own, and password
login judged from `sshd -T`. Pure: no hosts."""

from __future__ import annotations

import json
import socket
import textwrap
from pathlib import Path

import pytest

from pitunnel.inventory import Inventory, load_inventory
from pitunnel.roles.pi.sshd import password_warning, passwords_on, sshd_passwords
from pitunnel.roles.probes.exposure import passwords_check
from pitunnel.roles.probes.http_route import Answer, fetch_over_ssh, judge
from pitunnel.roles.probes.report import PathReport

APP = Answer(200, b"<html><h1>Garden sensors</h1><p>soil: 41%</p></html>", (("Content-Type", "text/html"),))
NGINX_404 = Answer(404, b"no tunnel here\n", (("Content-Type", "application/octet-stream"),))
NGINX_502 = Answer(502, b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1>"
                   b"</center><hr><center>nginx/1.22.1</center></body></html>", (("Content-Type", "text/html"),))


def lab_api(pi: str, forwarded: str | None) -> Answer:
    return Answer(200, json.dumps({"pi": pi, "x_forwarded_for": forwarded}).encode(),
                  (("Content-Type", "application/json"),))


def test_the_same_answer_passes() -> None:
    ok, detail = judge("pi1", APP, APP)
    assert ok and "the same answer as on the Pi itself" in detail


@pytest.mark.parametrize("via", [NGINX_404, NGINX_502, Answer(404, NGINX_502.body.replace(b"502", b"404"))])
def test_a_page_nginx_made_never_passes(via: Answer) -> None:
    ok, detail = judge("pi1", via, APP)
    assert not ok and str(via.status) in detail


def test_nginx_404_against_the_apps_own_404_fails_and_says_what_differed() -> None:
    app_404 = Answer(404, b"<html>Garden sensors: no such page</html>")
    ok, detail = judge("pi1", NGINX_404, app_404)
    assert not ok
    assert detail.startswith("the body differs: through the VPS 404, 15 bytes")
    assert "'no tunnel here\\n'" in detail and "on the Pi itself 404, 41 bytes" in detail


def test_an_app_that_names_its_pi_passes_by_name_and_another_pi_fails() -> None:
    assert judge("pi1", lab_api("pi1", "198.18.0.1"), lab_api("pi1", None)) == (
        True, "HTTP 200, answered as pi1, as on the Pi itself")
    ok, detail = judge("pi1", lab_api("pi2", "198.18.0.1"), lab_api("pi1", None))
    assert not ok and detail == "answered by pi2, not pi1"


def test_a_page_with_a_timestamp_passes_only_when_nearly_the_same() -> None:
    page = "<html><h1>Garden sensors</h1>" + "<p>bed {}: soil 41%</p>" * 20 + "<p>at 2026-11-30 07:{}</p></html>"
    a = Answer(200, page.format(*range(20), "10:01").encode(), (("Content-Type", "text/html"),))
    b = Answer(200, page.format(*range(20), "10:02").encode(), (("Content-Type", "text/html"),))
    ok, detail = judge("pi1", a, b)
    assert ok and "changes per request" in detail
    other = Answer(200, b"<html>a different app</html>", (("Content-Type", "text/html"),))
    assert not judge("pi1", other, b)[0]
    json_b = Answer(200, b.body, (("Content-Type", "application/json"),))
    assert not judge("pi1", a, json_b)[0]  # not the same type of answer


# ----------------------------------------------------------------------- passwords through a public port
@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent("""
        settings: {laptop_key: null, known_hosts: kh}
        vps: {main: {address: 203.0.113.1}}
        pis:
          open: {address: 10.0.0.1, tunnels: {ssh: {type: ssh, remote_port: 20022, public: true}}}
          closed: {address: 10.0.0.2, disable_password_login: true,
                   tunnels: {ssh: {type: ssh, remote_port: 20023, public: true}}}
          private: {address: 10.0.0.3, tunnels: {ssh: {type: ssh, remote_port: 20024}}}
        """))
    return load_inventory(file)


ON = "passwordauthentication yes\nkbdinteractiveauthentication no"
OFF = "passwordauthentication no\nkbdinteractiveauthentication no"


def test_passwords_on_reads_sshd_t() -> None:
    assert passwords_on(ON) is True and passwords_on(OFF) is False
    assert passwords_on("passwordauthentication no\nkbdinteractiveauthentication yes") is True
    assert passwords_on("") is None


def test_warning_names_the_pi_the_public_port_and_the_fix(inv: Inventory) -> None:
    warning = password_warning(inv.pis["open"], [inv.vps["main"]], True)
    assert warning is not None and warning.startswith("open's sshd is public at 203.0.113.1:20022")
    assert "`disable_password_login: true` for open once key login works" in warning
    assert password_warning(inv.pis["open"], [inv.vps["main"]], False) is None
    assert password_warning(inv.pis["private"], [inv.vps["main"]], True) is None
    assert password_warning(inv.pis["closed"], [inv.vps["main"]], True) is None  # provision turns them off


def run_check(inv: Inventory, pi: str, sshd_t: str) -> PathReport:
    report = PathReport(pi)
    passwords_check(report, inv.pis[pi], inv.vps["main"], sshd_passwords(sshd_t))
    return report


def test_verify_warns_trusts_sshd_t_and_fails_an_override(inv: Inventory) -> None:
    (warned,) = run_check(inv, "open", ON).checks
    assert warned.passed and warned.warning and "203.0.113.1:20022" in warned.detail and "disable_password_login" in warned.hint
    (off,) = run_check(inv, "open", OFF).checks
    assert off.passed and not off.warning and "passwordauthentication no" in off.detail
    (overridden,) = run_check(inv, "closed", ON).checks
    assert not overridden.passed and "disable_password_login is true, but sshd -T says" in overridden.detail
    assert run_check(inv, "private", ON).checks == []


# ----------------------------------------------------------------------- the request on the Pi itself
class FakeChannel:
    """What paramiko's direct-tcpip channel does here: takes the request, hands out the answer in pieces,
    then either closes or (like an app keeping the connection open) times out."""

    def __init__(self, pieces: list[bytes], *, close: bool) -> None:
        self.pieces, self.close_at_end, self.sent = list(pieces), close, b""

    def settimeout(self, seconds: float) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def recv(self, size: int) -> bytes:
        if self.pieces:
            return self.pieces.pop(0)
        if self.close_at_end:
            return b""
        raise socket.timeout("timed out")

    def close(self) -> None:
        pass


class FakeTransport:
    def __init__(self, chan: FakeChannel) -> None:
        self.chan = chan
        self.opened: tuple[str, int] | None = None

    def open_channel(self, kind: str, dest: tuple[str, int], src: tuple[str, int], timeout: float) -> FakeChannel:
        self.opened = dest
        return self.chan


@pytest.mark.parametrize(("pieces", "close"), [
    ([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhel", b"lo"], False),
    ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n", b"2\r\nlo\r\n0\r\n\r\n"], False),
    ([b"HTTP/1.0 200 OK\r\n\r\nhello"], True),
])
def test_the_request_on_the_pi_reads_one_whole_answer(pieces: list[bytes], close: bool) -> None:
    chan = FakeChannel(pieces, close=close)
    transport = FakeTransport(chan)
    answer = fetch_over_ssh(transport, 8080, "198.18.0.10")  # type: ignore[arg-type]
    assert (answer.status, answer.body) == (200, b"hello") and transport.opened == ("127.0.0.1", 8080)
    assert chan.sent.startswith(b"GET / HTTP/1.1\r\nHost: 198.18.0.10\r\n") and b"Connection: close\r\n" in chan.sent


def test_no_answer_at_all_is_an_error() -> None:
    with pytest.raises(socket.timeout):
        fetch_over_ssh(FakeTransport(FakeChannel([], close=False)), 80, "x")  # type: ignore[arg-type]


def test_a_long_page_of_few_distinct_characters_that_changes_per_request_passes() -> None:
    """A page longer than 200 bytes made of a handful of characters (a log of readings, one a line) that names
    when it was served: likeness is measured on every byte (SequenceMatcher's autojunk would drop the digits and
    newlines as 'popular' and call it a quarter alike)."""
    def readings(served: int) -> bytes:
        return (b"".join(b"%d\n" % (i * 7 % 10) for i in range(100)) + b"served %d\n" % served
                + b"".join(b"%d\n" % (i * 3 % 10) for i in range(300)))
    text = (("Content-Type", "text/plain"),)
    ok, detail = judge("pi1", Answer(200, readings(1), text), Answer(200, readings(2), text))
    assert (ok, detail) == (True, "HTTP 200 as on the Pi itself; the body changes per request "
                                  "(100% alike, 809 and 809 bytes)")


class PatientChannel(FakeChannel):
    """A channel as paramiko's: with no timeout set, a recv on an app that keeps the connection open never returns."""

    def __init__(self, pieces: list[bytes]) -> None:
        super().__init__(pieces, close=False)
        self.timeout: float | None = None

    def settimeout(self, seconds: float | None) -> None:
        self.timeout = seconds

    def recv(self, size: int) -> bytes:
        if not self.pieces and self.timeout is None:
            raise AssertionError("recv would block forever: no timeout on the channel")
        return super().recv(size)


class PatientTransport(FakeTransport):
    def open_channel(self, kind: str, dest: tuple[str, int], src: tuple[str, int],
                     timeout: float | None = None) -> FakeChannel:
        assert timeout is not None and 0 < timeout <= 60, f"opening the channel may wait {timeout!r} s"
        return super().open_channel(kind, dest, src, timeout)


def test_the_request_on_the_pi_waits_a_bounded_time_for_an_app_that_keeps_the_connection_open() -> None:
    chan = PatientChannel([b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello"])  # no length, never closed
    answer = fetch_over_ssh(PatientTransport(chan), 8080, "198.18.0.10")  # type: ignore[arg-type]
    assert (answer.status, answer.body) == (200, b"hello")
    assert chan.timeout is not None and 0 < chan.timeout <= 60
