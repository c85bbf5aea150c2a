"""`ssh pi1` from anywhere (issue 25, part 2), on one lab boot with two VPSes, the laptop away from home: the
Host blocks `pitunnel ssh-config --write` keeps in a temp HOME, read by the system's OpenSSH, reach the Pi
through a public tunnel's port and through a loopback-only tunnel with the VPS as jump host, and still do with
one of the VPSes down; `pitunnel ssh pi1 -- hostname` the same.

The first test provisions pi1 with a second, loopback-only ssh tunnel beside the lab's public one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from lab import away_from_home, powered_off, vps_dropped
from pitunnel.roles.site import provision
from tests.conftest import lab_up
from tests.lab.runs import play

pytestmark = pytest.mark.lab
PITUNNEL = str(Path(sys.executable).with_name("pitunnel"))
PRIVATE_PORT = 12400  # pi1's loopback-only ssh tunnel, on both VPSes
PI_ADDR = "198.19.1.2"  # pi1's address: its host key is filed under it (the laptop never connects there)


@pytest.fixture(scope="module")
def inventories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The lab's inventory (pi1's public ssh tunnel), and one with a loopback-only ssh tunnel too (the one
    pitunnel's routes take, as its own connections do), provisioned."""
    public = Path(lab_up(1, vpses=2).inventory)  # type: ignore[attr-defined]
    doc = yaml.safe_load(public.read_text())
    doc["pis"]["pi1"]["tunnels"]["private"] = {"type": "ssh", "local_port": 22, "remote_port": PRIVATE_PORT}
    private = tmp_path_factory.mktemp("inv") / "hosts.yml"
    private.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, _ = play(private, provision, quiet=True)
    assert code == 0
    return {"public": public, "private": private}


def laptop_env(home: Path) -> dict[str, str]:
    """A laptop with its own HOME and cache, no ssh-agent: only the inventory's key is offered."""
    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return {**env, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}


def written(inventory: Path, home: Path) -> Path:
    """`pitunnel ssh-config --write` into `home`; the file of Host blocks (a second run changes nothing)."""
    home.mkdir(exist_ok=True)
    for run in (1, 2):
        done = subprocess.run([PITUNNEL, "ssh-config", "--write", "-i", str(inventory)], env=laptop_env(home),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert ("nothing to change" in done.stdout) == (run == 2), done.stdout
    conf = home / ".ssh" / "pitunnel.conf"
    assert conf.stat().st_mode & 0o777 == 0o600
    assert (home / ".ssh" / "config").read_text().splitlines()[1] == f"Include {conf}"
    return conf


def answer(config: Path, host: str, home: Path) -> tuple[str, float]:
    """`ssh -F config host hostname` (system OpenSSH): what the Pi said, and how long it took."""
    started = time.monotonic()
    done = subprocess.run(["ssh", "-F", str(config), "-o", "BatchMode=yes", host, "hostname"], env=laptop_env(home),
                          capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    return (done.stdout.strip() if done.returncode == 0 else f"rc {done.returncode}: {done.stderr}"), \
        time.monotonic() - started


def pitunnel_ssh(inventory: Path, home: Path) -> str:
    done = subprocess.run([PITUNNEL, "ssh", "pi1", "-i", str(inventory), "--", "hostname"], env=laptop_env(home),
                          capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    return done.stdout.strip() if done.returncode == 0 else f"rc {done.returncode}: {done.stderr}"


@pytest.fixture(scope="module")
def away() -> Iterator[None]:
    with away_from_home("pi1"):
        yield


def test_written_config_reaches_the_pi_from_away_by_its_public_port_and_by_jump_host(
        inventories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, away: None) -> None:
    public_home, private_home = tmp_path_factory.mktemp("public"), tmp_path_factory.mktemp("private")
    public, private = written(inventories["public"], public_home), written(inventories["private"], private_home)
    for config, host, home in ((public, "pi1.vps", public_home), (public, "pi1.vps2", public_home),
                               (public, "pi1", public_home), (private, "pi1.vps", private_home),
                               (private, "pi1.vps2", private_home), (private, "pi1", private_home),
                               (public_home / ".ssh" / "config", "pi1", public_home)):
        said, took = answer(config, host, home)
        print(f"{config.parent.parent.name} {host}: {said} in {took:.1f}s")
        assert said == "pi1", (config, host)
    assert "Port 12346" in public.read_text() and "ProxyJump vps" not in public.read_text()
    assert f"Port {PRIVATE_PORT}" in private.read_text() and "ProxyJump vps2" in private.read_text()
    assert pitunnel_ssh(inventories["private"], private_home) == "pi1"
    for vps in ("vps", "vps2"):  # the VPSes' own blocks: `ssh vps` logs in to the VPS itself
        said, _ = answer(private, vps, private_home)
        assert said == vps
    release = subprocess.run(["ssh", "-F", str(private), "pi1", "cat /etc/debian_version; ssh -V"], capture_output=True,
                             text=True, env=laptop_env(private_home), timeout=60, stdin=subprocess.DEVNULL)
    print(f"pi1: Debian {release.stdout.strip()} {release.stderr.strip()}")


def test_a_pi_key_other_than_the_one_pitunnel_recorded_is_refused_on_every_route(
        inventories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, away: None) -> None:
    home = tmp_path_factory.mktemp("impostor")
    other = home / "other_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    doc = yaml.safe_load(inventories["private"].read_text())
    known = home / "known_hosts"  # the lab's, with pi1's keys swapped for another key: as if another host answered
    lines = Path(doc["settings"]["known_hosts"]).read_text().splitlines()
    known.write_text("".join(f"{line}\n" for line in lines if not line.startswith(f"{PI_ADDR} ")) +
                     f"{PI_ADDR} {other.with_suffix('.pub').read_text().split()[0]} "
                     f"{other.with_suffix('.pub').read_text().split()[1]}\n")
    doc["settings"]["known_hosts"] = str(known)
    inventory = home / "hosts.yml"
    inventory.write_text(yaml.safe_dump(doc, sort_keys=False))
    config = written(inventory, home)
    assert answer(config, "vps", home)[0] == "vps"  # the VPS's key is still the one recorded
    for host in ("pi1", "pi1.vps", "pi1.vps2"):
        said, _ = answer(config, host, home)
        assert said.startswith("rc 255") and "Host key verification failed" in said, (host, said)


def test_with_one_vps_down_the_other_answers(inventories: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
                                             away: None) -> None:
    for kind in ("public", "private"):
        home = tmp_path_factory.mktemp(f"{kind}-down")
        config = written(inventories[kind], home)
        with vps_dropped():  # the first VPS's packets dropped: ConnectTimeout, then the second
            said, took = answer(config, "pi1", home)
            print(f"{kind}, vps dropped: {said} in {took:.1f}s")
            assert said == "pi1"
            assert answer(config, "pi1.vps", home)[0].startswith("rc 255")  # that route is really down
            assert pitunnel_ssh(inventories[kind], home) == "pi1"
    with powered_off("vps"):  # stopped: refused or unreachable at once
        home = tmp_path_factory.mktemp("off")
        said, took = answer(written(inventories["private"], home), "pi1", home)
        print(f"vps powered off: {said} in {took:.1f}s")
        assert said == "pi1"
