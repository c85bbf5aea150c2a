"""`pitunnel revoke` on a real lab (issue 22): pi1 is stolen, and an outsider holds a session to the VPS with a
copy of its tunnel key. The owner, away from pi1's home, revokes it: the session ends, the key logs in no
more, pi1's public port and route close, pi2 is untouched, later runs leave pi1 out and keep its ports, and
pi1 comes back only with a new key made on it. One lab boot (two Pis) for the module."""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
import yaml

import lab
from lab import VPS_ADDR
from pitunnel.inventory import load_inventory
from pitunnel.inventory.revoked import read_revoked, revoked_file
from pitunnel.roles.site import provision, provision_vps
from tests.conftest import ROOT, lab_up
from tests.lab.runs import TUNNEL_KEY, authorised_fingerprints, etc_diff, etc_state, in_host, play, tunnel_key_fingerprint, wait_for

pytestmark = pytest.mark.lab

VPS = str(VPS_ADDR)
PUBLIC = 12346  # pi1's public ssh port on the VPS (the lab's inventory)
KEYS = "/var/lib/pitunnel/.ssh/authorized_keys"


@pytest.fixture(scope="module")
def inventory() -> Iterator[Path]:
    inv = lab_up(2).inventory
    revoked_file(inv).unlink(missing_ok=True)
    code, _ = play(inv, provision, quiet=True)
    assert code == 0
    yield inv
    revoked_file(inv).unlink(missing_ok=True)  # whatever happened, the next module's lab knows no revoked Pi


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The checkout's command line, as the owner runs it."""
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)


def status(pi: str) -> int:
    """The HTTP status of the Pi's route through the VPS's Nginx (0: no answer)."""
    try:
        with urllib.request.urlopen(f"http://{VPS}/{pi}/", timeout=3) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return 0


def port_open(port: int) -> bool:
    try:
        socket.create_connection((VPS, port), timeout=3).close()
        return True
    except OSError:
        return False


def tunnel_session(private_key: str) -> paramiko.Transport | None:
    """A login to the VPS's tunnel account with this key, held open with no forward (None: refused)."""
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(private_key))
    transport = paramiko.Transport(socket.create_connection((VPS, 12345), timeout=5))
    try:
        transport.connect(username="pitunnel", pkey=key)
    except paramiko.AuthenticationException:
        transport.close()
        return None
    return transport


def forward_granted(transport: paramiko.Transport, port: int) -> bool:
    try:
        transport.request_port_forward("127.0.0.1", port)
        return True
    except (paramiko.SSHException, OSError, EOFError):
        return False


def pi_logins(pi: str) -> int:
    """How many logins the Pi's own sshd has accepted since boot (read through the lab's door)."""
    out = in_host(pi, "journalctl -q -b -o cat _COMM=sshd _COMM=sshd-session | grep -c '^Accepted '; true")
    return int(out.strip() or 0)


def api_port(inventory: Path, pi: str) -> int:
    return next(t.remote_port for t in load_inventory(inventory, save_allocations=False).pis[pi].tunnels
                if t.name == "api")


STOLEN: dict[str, str] = {}


def test_revoke_ends_the_outsiders_session_and_closes_pi1_without_contacting_it(inventory: Path) -> None:
    STOLEN["key"] = stolen = in_host("pi1", f"cat {TUNNEL_KEY}")
    STOLEN["fingerprint"] = tunnel_key_fingerprint("pi1")
    STOLEN["line"] = in_host("vps", f"grep 'pitunnel:pi1$' {KEYS}").strip()
    api = api_port(inventory, "pi1")
    outsider = tunnel_session(stolen)
    assert outsider is not None and outsider.is_authenticated(), "control: the copied key logs in"
    assert status("pi1") == 200 and port_open(PUBLIC), "control: pi1 is up before"
    logins = pi_logins("pi1")
    with lab.away_from_home("pi1"):
        started = time.monotonic()
        check = cli("revoke", "pi1", "-i", str(inventory), "--check")
        assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-2000:]
        assert outsider.is_active() and authorised_fingerprints("vps", "pi1"), "--check changed nothing"
        assert not revoked_file(inventory).exists()
        run = cli("revoke", "pi1", "-i", str(inventory))
        took = time.monotonic() - started
    out = run.stdout
    assert run.returncode == 0, out[-3000:] + run.stderr[-2000:]
    assert wait_for(lambda: not outsider.is_active(), 10), "the outsider's session is still there"
    assert not forward_granted(outsider, api), "a forward over the old session"
    assert tunnel_session(stolen) is None, "a new login with the revoked key"
    assert authorised_fingerprints("vps", "pi1") == []
    effective = in_host("vps", "sshd -T -C user=pitunnel,host=pitunnel,addr=192.0.2.1 | grep -i '^revokedkeys'")
    assert effective.split()[1:] == ["/etc/ssh/pitunnel_revoked_keys"], effective
    assert wait_for(lambda: not port_open(PUBLIC), 15), "pi1's public port still answers"
    assert status("pi1") == 404, "pi1's route still answers"
    assert status("pi2") == 200 and port_open(12347), "pi2 is untouched"
    assert pi_logins("pi1") == logins, "revoke logged in to pi1"
    recap = next(l for l in out.splitlines() if l.startswith("pi1 "))
    assert "round_trips=0" in recap and "was not contacted" in out, recap
    assert "change every password and secret pi1 held" in out and "--release-ports" in out
    record = read_revoked(revoked_file(inventory))[0]["pi1"]
    assert [k.fingerprint for k in record.keys] == [STOLEN["fingerprint"]]
    assert record.ports["vps"] == {"ssh": PUBLIC, "api": api}
    print(f"revoke pi1 (away from its home): {took:.1f}s with --check; the outsider's session ended, its key refused")
    before = etc_state("vps")
    again = cli("revoke", "pi1", "-i", str(inventory))
    assert again.returncode == 0 and "already, since" in again.stdout, again.stdout[-2000:]
    assert etc_diff(before, etc_state("vps")) == [], "a second revoke changed the VPS"


def test_later_runs_leave_pi1_out_and_keep_its_ports(inventory: Path, tmp_path: Path) -> None:
    assert STOLEN, "needs the revoke above"
    verify = cli("verify", "-i", str(inventory))
    assert verify.returncode == 0, verify.stdout[-3000:] + verify.stderr[-2000:]
    assert "revoked: pi1" in verify.stderr and "pi2" in verify.stdout
    # a mistake puts the stolen key's line back: sshd refuses it all the same (RevokedKeys)
    assert STOLEN["line"].endswith("pitunnel:pi1")
    lab.write_file("vps", KEYS, in_host("vps", f"cat {KEYS}") + STOLEN["line"] + "\n")
    assert authorised_fingerprints("vps", "pi1") == [STOLEN["fingerprint"]]
    assert tunnel_session(STOLEN["key"]) is None, "the revoked key logs in once its line is back"
    code, _ = play(inventory, provision_vps, quiet=True)
    assert code == 0
    assert authorised_fingerprints("vps", "pi1") == [] and tunnel_session(STOLEN["key"]) is None
    assert status("pi1") == 404 and not port_open(PUBLIC)
    # a new tunnel of pi2 with `remote_port: auto` never gets pi1's ports, nor once pi1 leaves the inventory
    taken = set(read_revoked(revoked_file(inventory))[0]["pi1"].ports["vps"].values())
    for name in ("lab.ports.yml", "lab.revoked.yml"):
        shutil.copy(inventory.with_name(name), tmp_path / name)
    doc = yaml.safe_load(inventory.read_text())
    doc["pis"]["pi2"]["tunnels"]["extra"] = {"type": "http", "local_port": 81, "path": "/extra/"}
    (tmp_path / "lab.yml").write_text(yaml.safe_dump(doc))
    extra = next(t.remote_port for t in load_inventory(tmp_path / "lab.yml").pis["pi2"].tunnels if t.name == "extra")
    del doc["pis"]["pi1"]
    (tmp_path / "lab.yml").write_text(yaml.safe_dump(doc))
    again = next(t.remote_port for t in load_inventory(tmp_path / "lab.yml").pis["pi2"].tunnels if t.name == "extra")
    assert extra not in taken and again not in taken, (extra, again, taken)
    assert yaml.safe_load((tmp_path / "lab.ports.yml").read_text())["vps"]["pi1/api"] in taken


def test_pi1_comes_back_only_with_a_new_key(inventory: Path) -> None:
    assert STOLEN, "needs the revoke above"
    refused = cli("provision-pi", "-i", str(inventory), "-l", "pi1")
    assert refused.returncode == 2, refused.stdout[-3000:]
    assert "tunnel key not revoked" in refused.stdout and authorised_fingerprints("vps", "pi1") == []
    assert "pi1" in read_revoked(revoked_file(inventory))[0]
    in_host("pi1", f"rm -f {TUNNEL_KEY} {TUNNEL_KEY}.pub")  # what a re-image does to it
    back = cli("provision-pi", "-i", str(inventory), "-l", "pi1")
    assert back.returncode == 0, back.stdout[-3000:] + back.stderr[-2000:]
    new = tunnel_key_fingerprint("pi1")
    assert new != STOLEN["fingerprint"] and authorised_fingerprints("vps", "pi1") == [new]
    assert read_revoked(revoked_file(inventory))[0]["pi1"].ended, "the revocation ended, its key still refused"
    code, _ = play(inventory, provision_vps, quiet=True)
    assert code == 0
    verify = cli("verify", "-i", str(inventory))
    assert verify.returncode == 0, verify.stdout[-3000:]
    assert status("pi1") == 200 and port_open(PUBLIC)
    assert tunnel_session(STOLEN["key"]) is None, "the stolen key stays refused"
