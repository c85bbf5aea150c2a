"""`pitunnel enroll` on a real lab (issue 25): pi1 gets a fresh card, a Debian image with its own cloud-init and
the files `enroll` wrote on its boot partition, and boots far from the laptop, which is away from pi1's home
the whole time (not one packet to its LAN address) and has no address for it at all. The Pi enrols itself,
its host key pinned before any contact; `status` shows it waiting; provision-pi reaches it through its
bootstrap tunnels and replaces them with its own (the bootstrap key off both VPSes, its sessions ended); verify
passes; `ssh pi1` by the written ssh config answers, also with the first VPS's packets dropped. One lab boot (one
Pi, two VPSes: it opens a bootstrap tunnel to each) for the module."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lab
from pitunnel.roles.site import provision_vps
from pitunnel.sshkeys import parse_public_key
from tests.conftest import ROOT, lab_up
from tests.lab.runs import in_host, play, wait_for
from tests.lab.test_ssh_anywhere import answer, pitunnel_ssh, written

pytestmark = pytest.mark.lab

KEYS = "/var/lib/pitunnel/.ssh/authorized_keys"
PUBLIC = "0.0.0.0:12346"  # pi1's public ssh listener on each VPS (the lab's inventory)
VPSES = ("vps", "vps2")


@dataclass
class Story:
    inventory: Path
    known_hosts: Path
    pinned: str = ""  # known_hosts as enroll left it (before the Pi booted)
    check: subprocess.CompletedProcess[str] | None = None  # enroll --check first
    untouched: bool = False  # ... which wrote nothing, pinned nothing, and authorised nothing
    enroll: subprocess.CompletedProcess[str] | None = None
    boot_seconds: float = 0.0
    bootstrap: dict[str, str] = field(default_factory=dict)  # the bootstrap key's fingerprint, read on each VPS
    sessions: dict[str, list[str]] = field(default_factory=dict)  # per VPS: the tunnel account's processes before
    status: subprocess.CompletedProcess[str] | None = None
    provision: subprocess.CompletedProcess[str] | None = None
    verify: subprocess.CompletedProcess[str] | None = None
    ssh_answers: tuple[str, str, str] = ("", "", "")  # `ssh -F <written config> pi1 hostname`, the same with the
    # first VPS's packets dropped, `pitunnel ssh pi1 -- hostname`
    packets: int = -1


def cli(inventory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The checkout's command line, as the owner runs it (no -a: no host key is accepted on first use)."""
    return subprocess.run([sys.executable, "-m", "invoke", *args, "-i", str(inventory)], cwd=ROOT,
                          capture_output=True, text=True, timeout=400, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    lab_up(1, vpses=2)
    work = tmp_path_factory.mktemp("enroll")
    inventory = lab.far_away_inventory("pi1", work / "hosts.yml")
    told = Story(inventory, inventory.with_suffix(".known_hosts"))
    code, _ = play(told.inventory, provision_vps, quiet=True)
    assert code == 0
    boot = work / "boot"
    boot.mkdir()
    known = told.known_hosts.read_text()
    told.check = cli(told.inventory, "enroll", "pi1", "--boot", str(boot), "--check")
    told.untouched = (not any(boot.iterdir()) and told.known_hosts.read_text() == known
                      and not any("pitunnel-bootstrap" in lab.exec_in(v, f"cat {KEYS}").stdout for v in VPSES))
    told.enroll = cli(told.inventory, "enroll", "pi1", "--boot", str(boot), "--expires", "2h")
    assert told.enroll.returncode == 0, told.enroll.stdout + told.enroll.stderr
    told.pinned = told.known_hosts.read_text()
    for vps in VPSES:
        line = next(x for x in lab.exec_in(vps, f"cat {KEYS}").stdout.splitlines() if "pitunnel-bootstrap:pi1" in x)
        told.bootstrap[vps] = parse_public_key(" ".join(line.split()[-3:-1])).fingerprint
    with lab.away_from_home("pi1") as sent:
        told.boot_seconds = lab.boot_from_seed("pi1", boot)
        for vps in VPSES:
            assert wait_for(lambda: PUBLIC in in_host(vps, "ss -Hltn"), 60), f"no bootstrap tunnel to {vps}"
        told.status = cli(told.inventory, "status")
        told.sessions = {vps: in_host(vps, "ps -o pid= -u pitunnel").split() for vps in VPSES}
        told.provision = cli(told.inventory, "provision-pi")
        told.verify = cli(told.inventory, "verify")
        home = work / "home"
        config = written(told.inventory, home)
        with lab.vps_dropped():
            one_down = answer(config, "pi1", home)[0]
        told.ssh_answers = (answer(config, "pi1", home)[0], one_down, pitunnel_ssh(told.inventory, home))
        told.packets = sent()
    for run in (told.status, told.provision, told.verify):  # the runs' own lines, for a failure's reader (-s)
        assert run is not None
        print(run.stdout, run.stderr)
    yield told


def test_the_pi_enrolled_itself_from_its_boot_files(story: Story) -> None:
    assert story.enroll is not None
    assert "readable by you alone: they hold the Pi's host key and its bootstrap key" in story.enroll.stdout
    assert "status: done" in in_host("pi1", "cloud-init status")  # Debian's own cloud-init, NoCloud from /boot/firmware
    assert in_host("pi1", "hostname").strip() == "pi1"
    # its login user: the laptop's key, no password (locked)
    assert in_host("pi1", "passwd -S pi").split()[1] == "L"
    laptop = lab.LAPTOP_KEY.with_suffix(".pub").read_text().split()[:2]
    assert laptop in [x.split()[:2] for x in in_host("pi1", "cat /home/pi/.ssh/authorized_keys").splitlines()]
    print(f"\nboot to cloud-init done: {story.boot_seconds:.1f}s")


def test_check_mode_says_what_it_would_do_and_does_nothing(story: Story) -> None:
    assert story.check is not None and story.check.returncode == 0, story.check.stdout + story.check.stderr
    assert "would change" in story.check.stdout and "authorized keys of the Pis" in story.check.stdout
    assert "enrolment files - " in story.check.stdout and story.untouched


def test_no_host_key_was_accepted_on_first_use(story: Story) -> None:
    """The Pi's only host key is the one enroll made and pinned before the Pi booted; no run added a key."""
    keys = in_host("pi1", "cat /etc/ssh/ssh_host_*_key.pub").splitlines()
    assert len(keys) == 1
    assert f"pi1 {' '.join(keys[0].split()[:2])}" in story.pinned.splitlines()
    assert story.known_hosts.read_text() == story.pinned


def test_the_laptop_sent_not_one_packet_to_the_pis_lan_address(story: Story) -> None:
    assert story.packets == 0


def test_status_showed_it_waiting_for_provision_pi(story: Story) -> None:
    assert story.status is not None
    for vps in VPSES:
        assert f"pi1/ssh via {vps}: enrolled: its bootstrap tunnel is up, waiting for provision-pi" in \
            story.status.stdout, story.status.stdout + story.status.stderr
    assert story.status.returncode == 0


def test_provision_pi_then_verify_pass_through_its_tunnel(story: Story) -> None:
    assert story.provision is not None and story.verify is not None
    assert story.provision.returncode == 0, story.provision.stdout + story.provision.stderr
    assert "bootstrap tunnel retired" in story.provision.stdout
    for vps in VPSES:  # the run ends only once its own tunnel took the bootstrap's listeners over on each VPS
        assert f"own tunnel listening on the VPS, bootstrap gone - {vps}: " in " ".join(story.provision.stdout.split())
    assert story.verify.returncode == 0, story.verify.stdout + story.verify.stderr
    for vps in VPSES:
        assert in_host("pi1", f"systemctl is-active pitunnel@{vps}.service").strip() == "active"


def test_ssh_pi1_by_the_written_config_answers_from_away_from_home(story: Story) -> None:
    """The system's OpenSSH with the Host blocks `pitunnel ssh-config --write` kept, and `pitunnel ssh`: the Pi
    answers through its tunnel, its pinned host key checked (the packet count above covers these too)."""
    assert story.ssh_answers == ("pi1", "pi1", "pi1")


@pytest.mark.parametrize("vps", VPSES)
def test_the_bootstrap_key_is_gone_and_its_session_ended(story: Story, vps: str) -> None:
    assert story.sessions[vps], f"the bootstrap tunnel had no session on {vps}"
    assert "pitunnel-bootstrap" not in lab.exec_in(vps, f"cat {KEYS}").stdout
    alive = in_host(vps, "".join(f"[ -d /proc/{pid} ] && echo {pid}\n" for pid in story.sessions[vps]) + "true")
    assert alive.split() == []
    logins = in_host(vps, "journalctl -q -o cat _COMM=sshd _COMM=sshd-session | grep 'Accepted publickey for pitunnel'")
    assert story.bootstrap[vps] in logins  # the bootstrap key did log in, and that session is gone
    # nothing of the bootstrap is left on the Pi
    assert in_host("pi1", "ls /etc/pitunnel-bootstrap /etc/systemd/system/pitunnel-bootstrap@.service 2>&1; "
                          "getent passwd pitunnel-boot || echo gone").count("No such file") == 2
    assert "gone" in in_host("pi1", "getent passwd pitunnel-boot || echo gone")
    assert in_host("pi1", f"systemctl is-active pitunnel-bootstrap@{vps}.service").strip() == "inactive"  # not failed
