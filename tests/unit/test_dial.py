"""Failing fast (issue 24): a host that could not be reached is tried once per run and every Pi reached through
it fails at once with its reason; a refused port fails at once; "no answer within Ns" comes after N s; Ctrl-C
ends logins in flight; an interrupted host is not green in the recap and nothing prints after the recap.
Real sockets on loopback: a port that listens and never answers, and a closed port."""

from __future__ import annotations

import dataclasses
import functools
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from pitunnel import dial, failures, sshconf
from pitunnel.inventory import TunnelSpec
from pitunnel.link import Unanswered
from pitunnel.remote import Credentials, Remote, Unreachable
from pitunnel.report import Reporter
from tests.unit.test_sshconf import free_port, pi


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    failures.silence_paramiko()
    yield


@pytest.fixture
def silent() -> Iterator[tuple[socket.socket, int]]:
    """A port that takes connections (the kernel's backlog) and never says a word: a dead sshd, a blackhole."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    yield server, server.getsockname()[1]
    server.close()


def taken(server: socket.socket) -> int:
    """How many connections reached `server` since the last call."""
    server.setblocking(False)
    count = 0
    while True:
        try:
            server.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


def vps_and_pi(port: int, tmp_path: Path, timeout: float = 1) -> tuple[Remote, Remote]:
    """A VPS at `port` and a Pi reached only through its tunnel there."""
    tunnel = TunnelSpec(name="ssh", kind="ssh", local_port=22, remote_port=20000, public=False, server_name=None,
                        path=None, basic_auth_file=None)
    vps = Remote(pi("127.0.0.1", port=port, name="main", connect_timeout=timeout), tmp_path / "kh", Credentials())
    spec = pi("127.0.0.1", port=free_port(), tunnels=(tunnel,), via="tunnel", given=frozenset({"address", "via"}),
              connect_timeout=timeout)
    return vps, Remote(spec, tmp_path / "kh", Credentials(), gateway=vps)


def failure(remote: Remote) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(Unreachable) as caught:
        remote.connection()
    return time.monotonic() - started, str(caught.value)


def test_a_silent_port_fails_after_connect_timeout_not_more(silent: tuple[socket.socket, int],
                                                           tmp_path: Path) -> None:
    vps, _ = vps_and_pi(silent[1], tmp_path, timeout=1)
    took, why = failure(vps)
    assert 1 <= took < 1.5, took  # it was 3 s more: a question in HTTP to a port that had said nothing
    assert f"no SSH handshake with port {silent[1]} within 1s" in why


def test_a_host_that_did_not_answer_is_tried_once_and_its_pis_fail_at_once_with_its_reason(
        silent: tuple[socket.socket, int], tmp_path: Path) -> None:
    server, port = silent
    vps, remote = vps_and_pi(port, tmp_path)
    _, why = failure(vps)
    assert taken(server) == 1
    took, again = failure(vps)
    assert took < 0.1 and again == why and taken(server) == 0  # not dialled again
    took, through = failure(remote)  # the Pi through its tunnel there
    assert took < 0.1 and taken(server) == 0
    assert through == f"pi1 through main's tunnel (127.0.0.1:20000 there): {why}"


def test_pis_waiting_for_their_vps_all_fail_when_it_does(silent: tuple[socket.socket, int], tmp_path: Path) -> None:
    server, port = silent
    vps, _ = vps_and_pi(port, tmp_path)
    pis = [vps_and_pi(port, tmp_path)[1] for _ in range(5)]
    for remote in pis:
        remote.gateway = vps
    took: list[float] = []
    threads = [threading.Thread(target=lambda r=remote: took.append(failure(r)[0])) for remote in pis]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(took) == 5 and max(took) < 1.6, took  # one connect_timeout for all, not one each
    assert taken(server) == 1


def test_a_refused_port_fails_at_once(tmp_path: Path) -> None:
    vps, _ = vps_and_pi(free_port(), tmp_path)
    took, why = failure(vps)
    assert took < 0.5 and "connection refused: nothing listens on port" in why


def test_a_name_with_several_addresses_is_dialled_at_the_next_one_when_one_refuses(
        silent: tuple[socket.socket, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """A name whose first address refuses (an IPv6 address where sshd listens on IPv4 only, say) is reached at
    its next address, as ssh does; only when every address fails is the last failure the one said."""
    server, port = silent
    closed = free_port()
    both = [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p)) for p in (closed, port)]
    monkeypatch.setattr(dial.socket, "getaddrinfo", lambda *_, **__: both)
    sock = dial.tcp("vps.example.com", 22, 1, "main")
    assert sock.getpeername() == ("127.0.0.1", port) and taken(server) == 1
    sock.close()
    monkeypatch.setattr(dial.socket, "getaddrinfo", lambda *_, **__: both[:1] * 2)
    with pytest.raises(Unreachable) as refused:
        dial.tcp("vps.example.com", 22, 1, "main")
    assert str(refused.value) == ("main: connection refused: nothing listens on port 22 (is `port:` the host's sshd "
                                  "port, and is sshd running?)")


def test_ctrl_c_ends_a_login_in_flight_at_once(silent: tuple[socket.socket, int], tmp_path: Path) -> None:
    vps, _ = vps_and_pi(silent[1], tmp_path, timeout=10)

    def ctrl_c() -> None:
        time.sleep(0.3)
        dial.STOP.set()
        dial.abandon_logins()

    threading.Thread(target=ctrl_c).start()
    took, why = failure(vps)
    assert took < 1, took
    assert why.endswith(dial.INTERRUPTED)


def test_no_new_connection_after_ctrl_c(silent: tuple[socket.socket, int], tmp_path: Path) -> None:
    server, port = silent
    dial.STOP.set()
    with pytest.raises(Unreachable, match="interrupted"):
        dial.tcp("127.0.0.1", port, 5, "here")
    assert taken(server) == 0


def test_an_interrupted_host_is_not_green_and_nothing_prints_after_the_recap() -> None:
    out = io.StringIO()
    reporter = Reporter(colour=True, out=out)
    reporter.line("vps", "ok", "a step")
    reporter.recap("pi1").interrupted = True
    reporter.print_recap()
    reporter.line("pi1", "unreachable", "connect", "late")  # a host still in flight after a second Ctrl-C
    reporter.note("pi1", "late too")
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("\033[31mpi1") and lines[-1].endswith("interrupted: not reached")
    assert lines[-2].startswith("\033[32mvps")
    assert "late" not in out.getvalue()
    assert dataclasses.replace(reporter.recaps["pi1"]).bad


def test_hosts_behind_a_jump_host_that_does_not_answer_fail_at_once_with_its_reason(
        silent: tuple[socket.socket, int], tmp_path: Path) -> None:
    server, port = silent
    config = paramiko.SSHConfig.from_text(f"Host pi*\n    ProxyJump jumpy\nHost jumpy\n    HostName 127.0.0.1\n"
                                          f"    Port {port}\n    User hopper\n")
    unanswered = Unanswered()  # the run's, shared by its links as remotes_for does
    pis = [pi(f"pi{n}", name=f"pi{n}", connect_timeout=1) for n in (1, 2, 3)]
    remotes = [Remote(spec, tmp_path / "kh", Credentials(), route=sshconf.resolve(spec, config),
                      unanswered=unanswered) for spec in pis]
    _, why = failure(remotes[0])
    assert f"hopper@127.0.0.1:{port}" in why and taken(server) == 1
    for remote in remotes[1:]:
        took, again = failure(remote)
        assert took < 0.1 and again == why
    assert taken(server) == 0  # dialled once for the run
    other = Remote(pis[1], tmp_path / "kh", Credentials(), route=sshconf.resolve(pis[1], config))
    failure(other)  # another run (its own memory) dials it again
    assert taken(server) == 1


def test_the_heartbeat_covers_connecting(silent: tuple[socket.socket, int], tmp_path: Path) -> None:
    out = io.StringIO()
    reporter = Reporter(out=out, heartbeat_after=0.3, heartbeat_every=0.3)
    vps, _ = vps_and_pi(silent[1], tmp_path, timeout=1)
    vps.busy = functools.partial(reporter.busy, vps.name)
    failure(vps)
    beats = [line for line in out.getvalue().splitlines() if line.startswith("running      main       connecting (")]
    assert 2 <= len(beats) <= 4, out.getvalue()


class Transport:
    """What `channel` asks of a connection's transport: is it up, and open a direct-tcpip channel (or fail)."""

    def __init__(self, *, active: bool = True, fails: BaseException | None = None) -> None:
        self.active, self.fails = active, fails
        self.opened: list[tuple[object, ...]] = []

    def is_active(self) -> bool:
        return self.active

    def open_channel(self, kind: str, dest: tuple[str, int], src: tuple[str, int], *, timeout: float) -> str:
        self.opened.append((kind, dest, src, timeout))
        if self.fails is not None:
            raise self.fails
        return "a channel"


def through(transport: Transport | None) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(client=SimpleNamespace(get_transport=lambda: transport))


def test_a_channel_is_opened_from_the_hosts_end_to_the_address_asked() -> None:
    transport = Transport()
    assert dial.channel(through(transport), "10.0.0.2", 22, 4.5, "pi1") == "a channel"  # type: ignore[arg-type]
    assert transport.opened == [("direct-tcpip", ("10.0.0.2", 22), ("127.0.0.1", 0), 4.5)]


@pytest.mark.parametrize(("transport", "said"), [
    (None, "pi1 via vps: connection lost; is the tunnel up?"),
    (Transport(active=False), "pi1 via vps: connection lost; is the tunnel up?"),
    (Transport(fails=paramiko.ChannelException(2, "Connect failed")), "pi1 via vps: Connect failed; is the tunnel up?"),
    (Transport(fails=EOFError()), "pi1 via vps: EOFError; is the tunnel up?"),
    (Transport(fails=OSError("reset")), "pi1 via vps: reset; is the tunnel up?"),
])
def test_a_channel_that_cannot_be_opened_is_one_line_with_the_hint(transport: Transport | None, said: str) -> None:
    with pytest.raises(Unreachable) as caught:
        dial.channel(through(transport), "127.0.0.1", 20022, 5, "pi1 via vps", hint="is the tunnel up?")  # type: ignore[arg-type]
    assert str(caught.value) == said
    with pytest.raises(Unreachable) as bare:
        dial.channel(through(transport), "127.0.0.1", 20022, 5, "pi1 via vps")  # type: ignore[arg-type]
    assert str(bare.value) == said.removesuffix("; is the tunnel up?")
