"""A real laptop's way in, on one lab boot: a passphrase key held by a real ssh-agent (no key file in the
inventory), the same key asked for once on a terminal, an ssh config with a ProxyJump to a Pi the laptop
cannot route to, and "away from home": the Pi's address unreachable, reached through its VPS's tunnel with
its own host key checked (a swapped one refused).

The tests run in file order on one lab: the first provisions it (the tunnel the others go through)."""

from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

import lab
from lab import KNOWN_HOSTS, VPS_ADDR
from pitunnel.roles.probes.status import status
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.site import provision, provision_pi
from pitunnel.roles.site import teardown as teardown_site
from tests.conftest import ROOT, lab_up
from tests.lab.runs import play

pytestmark = pytest.mark.lab
PASSPHRASE = "correct horse battery"
PI_ADDR = "198.19.1.2"
TUNNEL_PORT = 12346  # pi1's private ssh tunnel on the VPS


@pytest.fixture(scope="module")
def laptop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A laptop of its own: a HOME whose only key is ~/.ssh/id_ed25519 with a passphrase, authorised for root
    on the VPS (as the VPS's provider would), loaded into a real ssh-agent started here; a copy of the lab's
    known_hosts; an inventory that names no key file."""
    lab_up(1)
    home = tmp_path_factory.mktemp("home")
    (home / ".ssh").mkdir(mode=0o700)
    key = home / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "laptop", "-f", str(key)], check=True)
    lab.sh("vps", f"echo '{key.with_name(key.name + '.pub').read_text().strip()}' >> /root/.ssh/authorized_keys")
    known = home / "known_hosts"
    shutil.copy(KNOWN_HOSTS, known)
    inventory = home / "hosts.yml"
    inventory.write_text(yaml.safe_dump(inventory_doc(key, known)))
    saved = {k: os.environ.get(k) for k in ("HOME", "SSH_AUTH_SOCK")}
    os.environ["HOME"] = str(home)  # no ~/.ssh/id_* of this machine's user is tried
    sock = home / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.environ["SSH_AUTH_SOCK"] = str(sock)
        ssh_add(key, dict(os.environ))
        yield {"home": home, "key": key, "known": known, "inventory": inventory}
    finally:
        agent.terminate()  # by its PID: the agent this module started
        agent.wait(timeout=10)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def inventory_doc(key: Path, known: Path, **pi: object) -> dict[str, object]:
    return {
        "settings": {"known_hosts": str(known), "laptop_key": str(key)},
        "defaults": {"connect_timeout": 2},
        "vps": {"vps": {"address": str(VPS_ADDR), "port": 12345, "user": "root"}},
        "pis": {"pi1": {"address": PI_ADDR, "user": "pi", "password_file": str(lab.password_file("pi1")),
                        "tunnels": {"ssh": {"type": "ssh", "remote_port": TUNNEL_PORT},
                                    "api": {"type": "http", "local_port": 80, "path": "/pi1/"}}, **pi}},
    }


def recap(p) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    return {h: (r.changed, r.failed + r.unreachable) for h, r in p.reporter.recaps.items()}


def passed(reports: list) -> bool:  # type: ignore[type-arg]
    return bool(reports) and all(r.passed for r in reports)


def run_verify(inventory: Path) -> list:  # type: ignore[type-arg]
    reports: list = []  # type: ignore[type-arg]
    code, _ = play(inventory, lambda p: reports.extend(verify(p)), quiet=True)
    assert code == 0, [(r.pi, [c for c in r.checks if not c.passed]) for r in reports]
    return reports


# ------------------------------------------------------------------------------------------ ssh-agent


def ssh_add(key: Path, env: dict[str, str]) -> None:
    """Load `key` into the agent (ssh-add reads a passphrase only from a terminal or an askpass program)."""
    askpass = key.with_name("askpass.sh")
    askpass.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
    askpass.chmod(0o700)
    subprocess.run(["ssh-add", "-q", str(key)], check=True, stdin=subprocess.DEVNULL, capture_output=True,
                   env={**env, "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"})
    askpass.unlink()


def test_a_key_in_ssh_agent_provisions_and_verifies_with_no_key_file(laptop: dict[str, Path]) -> None:
    listed = subprocess.run(["ssh-add", "-l"], capture_output=True, text=True, env=dict(os.environ))
    assert listed.returncode == 0 and "laptop" in listed.stdout  # the real agent holds the key
    code, p = play(laptop["inventory"], provision)  # no terminal here: a prompt would fail the logins
    assert code == 0, recap(p)
    assert p is not None and all(bad == 0 for _, bad in recap(p).values())
    assert passed(run_verify(laptop["inventory"]))  # logs in to the Pi with the agent's key now


# ------------------------------------------------------------------------------------------ one prompt


def invoke_on_a_terminal(args: list[str], answer: str, env: dict[str, str],
                         timeout: float = 240) -> tuple[int, str]:
    """Run `invoke ARGS` from the checkout with a pseudo-terminal as its controlling terminal; answer each
    passphrase prompt with `answer`. Returns (exit code, everything it printed)."""
    master, slave = os.openpty()

    def own_terminal() -> None:  # runs in the child after setsid: the pty becomes its controlling terminal
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen([str(ROOT / ".venv/bin/invoke"), *args], cwd=ROOT, env=env, stdin=slave,
                            stdout=slave, stderr=slave, start_new_session=True, preexec_fn=own_terminal)
    os.close(slave)
    out = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
                if out.count(b"Passphrase for key") > answered:
                    answered += 1
                    os.write(master, answer.encode() + b"\n")
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process group this test started
            proc.wait(timeout=10)
        os.close(master)
    return code, out.decode(errors="replace")


def test_a_passphrase_key_not_in_the_agent_is_asked_for_once(laptop: dict[str, Path]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}  # the agent is not asked
    code, out = invoke_on_a_terminal(["provision", "-i", str(laptop["inventory"])], PASSPHRASE, env)
    out = re.sub(r"\x1b\[[0-9;]*m", "", out)  # colours: it runs on a terminal
    assert code == 0, out[-3000:]
    assert out.count("Passphrase for key") == 1, out[-3000:]  # the VPS and the Pi: one key, one prompt
    assert PASSPHRASE not in out  # not echoed, not logged
    assert re.search(r"vps\s+:.*changed=0\s.*failed=0", out) and re.search(r"pi1\s+:.*changed=0\s.*failed=0", out), \
        out[-3000:]


# ------------------------------------------------------------------------------------------ ssh config


SSH_CONFIG = """
Host lab-vps
    HostName {vps}
    Port 12345
    User root
    IdentityFile {key}
Host lab-pi1
    HostName 127.0.0.1
    Port {tunnel}
    User pi
    IdentityFile {key}
    ProxyJump lab-vps
    HostKeyAlias {pi}
"""


def routed(address: str, port: int = 22) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
        return True
    except OSError:
        return False


def test_an_ssh_config_with_a_proxyjump_reaches_a_pi_the_laptop_cannot_route_to(
        laptop: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    config = laptop["home"] / "ssh_config"
    config.write_text(SSH_CONFIG.format(vps=VPS_ADDR, key=laptop["key"], tunnel=TUNNEL_PORT, pi=PI_ADDR))
    doc = inventory_doc(laptop["key"], laptop["known"], via="direct")
    doc["settings"]["ssh_config"] = str(config)  # type: ignore[index]
    pi = doc["pis"]["pi1"]  # type: ignore[index]
    pi["address"] = "lab-pi1"
    del pi["user"]  # the ssh config says who
    inventory = laptop["home"] / "ssh-config.yml"
    inventory.write_text(yaml.safe_dump(doc))
    with lab.away_from_home("pi1"):
        assert not routed(PI_ADDR)
        code, _ = play(inventory, provision_pi, check=True, verbose=True, limit="pi1")
        shown = capsys.readouterr().out
        assert code == 0, shown[-3000:]
        for line in ("hostname 127.0.0.1 (ssh_config)", f"port {TUNNEL_PORT} (ssh_config)", "user pi (ssh_config)",
                     f"host key: {PI_ADDR} in known_hosts (HostKeyAlias, ssh_config)", "via direct (inventory)"):
            assert line in shown, shown[-3000:]
        assert re.search(r"jump lab-vps: hostname 198.18.0.10 \(ssh_config\), port 12345 \(ssh_config\), "
                         r"user root \(ssh_config\).*\(ssh_config ProxyJump\)", shown), shown[-3000:]
        code, p = play(inventory, provision_pi, limit="pi1")
        assert code == 0, recap(p)
        assert passed(run_verify(inventory))


# ------------------------------------------------------------------------------------------ away from home


def test_away_from_home_the_pi_is_reached_through_its_tunnel_with_its_own_host_key(
        laptop: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    inventory = laptop["inventory"]  # via: auto (the default), the Pi's LAN address
    faster = laptop["home"] / "fast.yml"  # a change that restarts the tunnel we come through
    faster.write_text(yaml.safe_dump(inventory_doc(laptop["key"], laptop["known"], keepalive="fast")))
    with lab.away_from_home("pi1"):
        assert not routed(PI_ADDR)
        code, p = play(inventory, provision_pi)
        out = capsys.readouterr().out
        assert code == 0, out[-3000:]
        assert recap(p)["pi1"] == (0, 0), out[-3000:]  # idempotent through the tunnel too
        assert re.search(rf"{re.escape(PI_ADDR)}:22: no answer within 2s\b.*: reached through vps's tunnel instead", out), out
        main_pid = "systemctl show -p ExecMainPID --value pitunnel@vps"
        before = lab.sh("pi1", main_pid)
        code, p = play(faster, provision_pi)
        out = capsys.readouterr().out
        assert code == 0, out[-3000:]
        assert recap(p)["pi1"][0] > 0 and "reconnecting through the new tunnel" in out, out[-3000:]
        assert "ServerAliveInterval 3" in lab.sh("pi1", "cat /etc/pitunnel/vps/ssh_config")
        assert lab.sh("pi1", main_pid) != before  # restarted (a moment after the run heard the handler)
        assert passed(run_verify(faster))  # through the restarted tunnel, end to end
        rows: list = []  # type: ignore[type-arg]
        assert play(faster, lambda p: rows.extend(status(p)), quiet=True)[0] == 0
        assert rows and all(r.up for r in rows)
        capsys.readouterr()
        # the Pi's known_hosts lines now hold other keys (the VPS's): the far end of the tunnel is refused
        known = laptop["known"].read_text()
        vps_keys = {line.split()[1]: line.split()[2] for line in known.splitlines()
                    if line.startswith(f"[{VPS_ADDR}]:12345 ")}
        swapped = "\n".join(f"{PI_ADDR} {line.split()[1]} {vps_keys[line.split()[1]]}"
                            if line.startswith(f"{PI_ADDR} ") else line for line in known.splitlines()) + "\n"
        laptop["known"].write_text(swapped)
        try:
            code, p = play(faster, provision_pi)
            refusal = capsys.readouterr()
        finally:
            laptop["known"].write_text(known)
    assert code != 0 and recap(p)["pi1"][1] == 1
    refused = [line for line in refusal.out.splitlines() if "CHANGED" in line]
    assert len(refused) == 1 and refused[0].split()[:2] == ["unreachable", "pi1"], refusal.out[-3000:]
    assert f"pi@{PI_ADDR}:22 through vps's tunnel CHANGED" in refused[0] and f"(known as {PI_ADDR})" in refused[0]
    assert "Traceback" not in refusal.err
    # teardown from away: everything but the tunnel it comes through goes during the run; that tunnel and the
    # tunnel account go a moment after the run has left, by the Pi's own timer; the Pi's key is off the VPS
    with lab.away_from_home("pi1"):
        code, p = play(faster, lambda p: teardown_site(p, purge=False), limit="pi1")
        out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert "reached through its tunnel to vps, which stops" in out and "once this run has left" in out, out[-3000:]
    assert "pitunnel:pi1" not in lab.sh("vps", "cat /var/lib/pitunnel/.ssh/authorized_keys")
    deadline = time.monotonic() + 15
    left = "?"
    while time.monotonic() < deadline:
        left = lab.sh("pi1", "systemctl is-active pitunnel@vps.service; getent passwd pitunnel; ls /etc/pitunnel "
                             "/run/pitunnel-later.sh* 2>&1 | grep -v 'No such file' || true")
        if left.split() == ["inactive"]:
            break
        time.sleep(0.5)
    assert left.split() == ["inactive"], f"the Pi's own timer did not finish the teardown: {left}"
