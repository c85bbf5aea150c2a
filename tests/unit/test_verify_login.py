"""verify's ssh probe when the far end is no sshd, and where the laptop files the Pi's host key (loopback only)."""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitunnel.inventory import Inventory
from pitunnel.roles.probes import login
from tests.unit.fake_hosts import FakeHost, load
from tests.unit.test_verify import INVENTORY, PI_KEY, at, pinned, tunnel


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    return load(tmp_path, INVENTORY, {"cam.htpasswd": "alice:$apr1$x$y\n"})


class Listener:
    """A port on loopback whose every connection gets `says` and then the end of the stream: no sshd behind it."""

    def __init__(self, says: bytes) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port: int = self.sock.getsockname()[1]
        self.says = says
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:  # says its piece, ends its side, and reads the client out: no reset, an end of stream
                conn.settimeout(5)
                conn.sendall(self.says)
                conn.shutdown(socket.SHUT_WR)
                try:
                    while conn.recv(4096):
                        pass
                except OSError:
                    pass


@pytest.fixture()
def listeners() -> Iterator[list[Listener]]:
    made: list[Listener] = []
    yield made
    for listener in made:
        listener.sock.close()


@pytest.mark.parametrize(("says", "detail", "hint"), [
    (b"SSH-2.0-OpenSSH_9.2\r\n", "closed after the SSH banner, before the key exchange",
     "an SSH server answered, then closed: does the Pi's sshd refuse new connections (MaxStartups, "
     "PerSourcePenalties), or does another host answer on this port?"),
    (b"", "closed before the SSH banner",
     "the VPS accepted but the tunnel did not reach the Pi's sshd: is its tunnel to this VPS connected?"),
], ids=["closed-after-its-banner", "closed-at-once"])
def test_a_public_port_where_no_sshd_answers_fails_saying_which_half(inv: Inventory, listeners: list[Listener],
                                                                     says: bytes, detail: str, hint: str) -> None:
    far = Listener(says)
    listeners.append(far)
    pi = dataclasses.replace(inv.pis["alpha"], host_key=pinned(PI_KEY))
    vps = dataclasses.replace(inv.vps["main"], address="127.0.0.1")
    ok, said, why = login.ssh_through(inv, pi, FakeHost("main"), tunnel(inv, "alpha", "ssh", remote_port=far.port),  # type: ignore[arg-type]
                                      vps, at(inv, pi))
    assert not ok and said.startswith(f"127.0.0.1:{far.port}: {detail}") and why == hint


def test_the_pis_host_key_is_looked_up_where_its_connection_files_it(inv: Inventory) -> None:
    """Under the name its connection uses (a HostKeyAlias, say), not only its address; a pin may carry a comment."""
    inv.settings.known_hosts.write_text(f"pi-home {pinned(PI_KEY)}\n")
    alpha = inv.pis["alpha"]
    assert login.pi_host_keys(inv, alpha, "pi-home").lookup("tunnel")[PI_KEY.get_name()] == PI_KEY  # type: ignore[index]
    assert not login.pi_host_keys(inv, alpha).keys()  # under 10.0.0.2: nothing
    aliased = at(inv, alpha)
    assert aliased.target.known_name == "10.0.0.2"
    commented = dataclasses.replace(alpha, host_key=pinned(PI_KEY) + " root@alpha")
    assert login.pi_host_keys(inv, commented).lookup("tunnel")[PI_KEY.get_name()] == PI_KEY  # type: ignore[index]


def test_a_units_fields_keep_an_equals_sign_in_their_value_and_a_missing_one_is_empty() -> None:
    from pitunnel.roles.probes.unit import TunnelState, fields, tunnel_fact, tunnel_state, unit_fact
    assert fields("LastError=2026-12-06T05:00:00 ssh: a=b failed\nnoise\nActiveState=active\n") == {
        "LastError": "2026-12-06T05:00:00 ssh: a=b failed", "ActiveState": "active"}
    assert tunnel_state("ActiveState=failed\n") == TunnelState("failed", "", 0, 0, "", "")
    assert tunnel_state("") == TunnelState()
    assert tunnel_fact("main").key == "tunnel-state:main" and unit_fact("main").key == "tunnel-unit:main"
