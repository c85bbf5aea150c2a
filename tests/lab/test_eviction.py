"""A retired tunnel key takes its sessions with it (issue 22), on a real lab: an outsider with a copy of a
Pi's tunnel key holds a session; rotate-keys, or the Pi dropped from the inventory and provision-vps, ends
it; and the reaper ends a retired key's session that holds a Pi's port when the Pi tries to listen there.
One lab boot for the module (two Pis)."""

from __future__ import annotations

import io
import socket
import time
from pathlib import Path

import paramiko
import pytest
import yaml

from lab import VPS_ADDR
from pitunnel.inventory import load_inventory
from pitunnel.play import Play
from pitunnel.roles.contract import listen_spec
from pitunnel.roles.rotate import rotate_keys
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.site import provision, provision_vps, teardown
from tests.conftest import lab_up
from tests.lab.runs import TUNNEL_KEY, authorised_fingerprints, in_host, play, tunnel_key_fingerprint, http_ok, wait_for

pytestmark = pytest.mark.lab

VPS = str(VPS_ADDR)
SSH_PORT = 12345  # the lab VPS's sshd
TITLE = "sessions of retired keys ended"


@pytest.fixture(scope="module")
def inventory() -> Path:
    inv = lab_up(2).inventory
    code, _ = play(inv, provision, quiet=True)
    assert code == 0
    return inv


def stolen_key(pi: str) -> str:
    """The Pi's tunnel key, as a copy from its SD card would give it."""
    return in_host(pi, f"cat {TUNNEL_KEY}")


def outsider(private_key: str) -> paramiko.Transport:
    """A session of the tunnel account logged in with `private_key`, held open with keepalives and no
    forwards (`ssh -N`)."""
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(private_key))
    transport = paramiko.Transport(socket.create_connection((VPS, SSH_PORT), timeout=5))
    transport.connect(username="pitunnel", pkey=key)
    transport.set_keepalive(5)
    assert transport.is_authenticated()
    return transport


def can_log_in(private_key: str) -> bool:
    try:
        outsider(private_key).close()
        return True
    except paramiko.AuthenticationException:
        return False


def vps_pids(transport: paramiko.Transport) -> set[str]:
    """The VPS's processes holding this connection (the session's monitor and its own process), read with ss."""
    sock = transport.sock
    assert isinstance(sock, socket.socket)
    port = sock.getsockname()[1]
    out = in_host("vps", f"ss -Htnp state established '( dport = :{port} )'")
    return {w.split("=")[1] for w in out.replace(",", " ").split() if w.startswith("pid=")}


def gone(pids: set[str]) -> bool:
    return not in_host("vps", " ".join(f"[ -d /proc/{p} ] && echo {p};" for p in pids) + " true").strip()


def forward_refused(transport: paramiko.Transport, listen: str) -> bool:
    host, port = listen.rsplit(":", 1)
    try:
        transport.request_port_forward(host, int(port))
    except (paramiko.SSHException, OSError, EOFError):
        return True
    return False


def api_listen(inventory: Path, pi: str) -> str:
    spec = load_inventory(inventory).pis[pi]
    return listen_spec(next(t for t in spec.tunnels if t.name == "api"))


def holders(port: str) -> str:
    return in_host("vps", f"ss -Htlnp 'sport = :{port}' | grep -o 'pid=[0-9]*' | sort -u").strip()


def verified(p: Play) -> None:
    verify(p)


def run_verify(inventory: Path) -> int:
    code, _ = play(inventory, verified, quiet=True)
    return code


def ended_step(p: Play, host: str = "vps") -> list[tuple[str, str]]:
    recap = p.reporter.recaps[host]
    return [(s.status, s.reason) for s in recap.steps if s.title == TITLE]


# ------------------------------------------------------------------------------------------ rotate-keys
def test_rotate_keys_ends_the_session_of_a_copied_key(inventory: Path) -> None:
    copy = stolen_key("pi1")
    listen = api_listen(inventory, "pi1")
    session = outsider(copy)
    pids = vps_pids(session)
    assert pids, "the outsider's session is not seen on the VPS"
    code, p = play(inventory, rotate_keys, limit="pi1")
    assert code == 0 and p is not None
    assert gone(pids), f"the outsider's session (pids {pids}) outlived its key"
    assert wait_for(lambda: not session.is_active(), 10)
    assert forward_refused(session, listen)
    assert not can_log_in(copy)
    ended = p.reporter.recaps["vps"].sessions_ended
    assert ended == 1, ended_step(p)  # the outsider's (the Pi's own old session ended when it reconnected)
    assert tunnel_key_fingerprint("pi1") in authorised_fingerprints("vps", "pi1")
    assert http_ok("pi1") and http_ok("pi2")
    assert run_verify(inventory) == 0
    print(f"rotate-keys ended {ended} session(s) on the VPS: {ended_step(p)}")


# ------------------------------------------------------------------------------------------ the reaper
def test_the_reaper_ends_a_retired_keys_session_holding_a_pis_port(inventory: Path) -> None:
    """A session of a key no longer in authorized_keys (retired by hand here, so that only the reaper acts)
    holds the Pi's API port; when the Pi, with its new key, fails to listen there, the reaper ends it."""
    listen = api_listen(inventory, "pi1")
    port = listen.rsplit(":", 1)[1]
    old = stolen_key("pi1")
    old_pub = in_host("pi1", f"ssh-keygen -y -f {TUNNEL_KEY}").split()[1]
    units = "pitunnel-watchdog@vps.service pitunnel@vps.service"
    in_host("pi1", f"systemctl stop {units}")
    assert wait_for(lambda: not holders(port), 20), "the Pi's listener did not go"
    session = outsider(old)
    session.request_port_forward(listen.rsplit(":", 1)[0], int(port))  # the copy takes the Pi's port
    pids = vps_pids(session)
    assert holders(port), "the outsider's forward is not listening"
    # the owner retires the key (a new one on the Pi, the VPS's line replaced): the outsider's session stays
    in_host("pi1", f"""set -e; cd {TUNNEL_KEY.rsplit('/', 1)[0]}
ssh-keygen -q -t ed25519 -N '' -C pitunnel -f new_key
chown --reference={TUNNEL_KEY} new_key new_key.pub
mv -f new_key {TUNNEL_KEY}; mv -f new_key.pub {TUNNEL_KEY}.pub""")
    new_pub = in_host("pi1", f"ssh-keygen -y -f {TUNNEL_KEY}").split()[1]
    in_host("vps", f"sed -i 's|{old_pub}|{new_pub}|' /var/lib/pitunnel/.ssh/authorized_keys")
    assert tunnel_key_fingerprint("pi1") in authorised_fingerprints("vps", "pi1")
    assert session.is_active() and not gone(pids)
    started = time.monotonic()
    in_host("pi1", f"systemctl start {units}")
    assert wait_for(lambda: http_ok("pi1"), 60), "the Pi did not get its port back"
    took = time.monotonic() - started
    assert gone(pids) and wait_for(lambda: not session.is_active(), 10)
    log = in_host("vps", "journalctl -q -o cat -t pitunnel-reaper --no-pager")
    assert f"holding port {port}: its key" in log and "is not authorised for that port now" in log, log
    assert run_verify(inventory) == 0
    print(f"the Pi's API answered again {took:.1f}s after its tunnel started")


# ------------------------------------------------------------------------------------------ a Pi dropped
def test_a_pi_dropped_from_the_inventory_loses_its_key_routes_and_sessions(inventory: Path, tmp_path: Path) -> None:
    copy = stolen_key("pi2")
    session = outsider(copy)
    pids = vps_pids(session)
    pi1_holders = holders("12346")
    assert pids and pi1_holders
    doc = yaml.safe_load(inventory.read_text())
    del doc["pis"]["pi2"]
    smaller = tmp_path / "hosts.yml"
    smaller.write_text(yaml.safe_dump(doc, sort_keys=False))
    # check mode lists what it would end, and ends nothing
    code, checked = play(smaller, provision_vps, check=True, quiet=True)
    assert code == 0 and checked is not None
    assert not gone(pids) and session.is_active()
    code, p = play(smaller, provision_vps, quiet=True)
    assert code == 0 and p is not None
    assert gone(pids) and wait_for(lambda: not session.is_active(), 10)
    assert forward_refused(session, api_listen(inventory, "pi2"))
    assert not can_log_in(copy)
    [(status, reason)] = ended_step(checked)
    assert status == "would change" and reason.startswith("end 2 sessions"), reason  # the outsider and pi2's tunnel
    assert p.reporter.recaps["vps"].sessions_ended == 2, ended_step(p)
    assert authorised_fingerprints("vps", "pi2") == []
    assert "pi2" not in in_host("vps", "ls /etc/nginx/pitunnel/locations /etc/nginx/sites-enabled")
    assert not http_ok("pi2") and not holders("12347")
    # the other Pi untouched: the same sessions hold its listeners, its route answers
    assert holders("12346") == pi1_holders and http_ok("pi1")
    # a rerun ends nothing, and says so
    code, p = play(smaller, provision_vps, quiet=True)
    assert code == 0 and p is not None
    [(status, reason)] = ended_step(p)
    assert status == "ok" and reason.startswith("none: every session"), reason
    assert p.reporter.recaps["vps"].sessions_ended == 0
    assert run_verify(smaller) == 0


# ------------------------------------------------------------------------------------------ teardown -l
def test_teardown_of_a_pi_ends_its_keys_sessions(inventory: Path) -> None:
    copy = stolen_key("pi1")
    session = outsider(copy)
    pids = vps_pids(session)
    assert pids
    code, p = play(inventory, lambda pl: teardown(pl, purge=False), limit="pi1", quiet=True)
    assert code == 0 and p is not None
    assert gone(pids) and wait_for(lambda: not session.is_active(), 10)
    assert not can_log_in(copy)
    assert authorised_fingerprints("vps", "pi1") == []
    assert p.reporter.recaps["vps"].sessions_ended >= 1, ended_step(p)  # the copy's (the Pi's own ended with its unit)
