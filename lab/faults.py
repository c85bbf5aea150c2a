"""Faults injected into the lab, and the time until a Pi is reachable again through its VPS.

Recovery = from the moment the fault ends until SSH through the VPS port shows the Pi's own host
key AND HTTP through Nginx answers as that Pi. Traffic to the public tunnel port keeps arriving
meanwhile, as it does on the internet. In a lab with two VPSes (lab.up(vpses=2)) "reachable" means
through ANY of them, as a user whose DNS names both sees it.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from . import machine
from .core import record
from .machine import exec_in
from .net import FWD_CHAIN, laptop_chain
from .plan import VPS_ADDR, LabPlan, make_plan
from .state import LabState
from .system import run

VPS = str(VPS_ADDR)
logging.getLogger("paramiko").setLevel(logging.CRITICAL)  # probes fail on purpose while down


@dataclass(frozen=True)
class Target:
    """What "reachable again" means for one lab Pi with the lab inventory's tunnels."""

    pi: str
    ssh_port: int
    http_path: str
    host_keys: tuple[str, ...]  # "type base64" of the Pi's own host keys


def target(pi: str) -> Target:
    index = int(pi.removeprefix("pi"))
    root = Path(record(pi).root) / "etc/ssh"
    keys = tuple(" ".join(p.read_text().split()[:2]) for p in sorted(root.glob("ssh_host_*_key.pub")))
    return Target(pi, 12345 + index, f"/{pi}/", keys)


def _plan() -> LabPlan:
    state = LabState.load()
    return make_plan(state.pis, state.vpses)


def vps_addresses() -> list[str]:
    """The address of every VPS of the lab, the first one first."""
    return [str(v.address) for v in _plan().vpses]


def reachable(t: Target, via: str | None = None) -> bool:
    """The Pi answers as itself through the VPS at address `via` (None: through any VPS of the lab)."""
    if via is None:
        return any(reachable(t, address) for address in vps_addresses())
    try:
        sock = socket.create_connection((via, t.ssh_port), timeout=2)
    except OSError:
        return False
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=3)
        key = transport.get_remote_server_key()
        if f"{key.get_name()} {key.get_base64()}" not in t.host_keys:
            return False
    except (paramiko.SSHException, OSError, EOFError):
        return False
    finally:
        transport.close()
    try:
        with urllib.request.urlopen(f"http://{via}{t.http_path}", timeout=3) as resp:
            return json.load(resp).get("pi") == t.pi
    except (OSError, ValueError):
        return False


def wait_recovered(t: Target, since: float, timeout: float, via: str | None = None) -> float | None:
    """Seconds from `since` until reachable (through `via`, or any VPS; polled every 0.2 s), or None after
    `timeout`. Counted to the start of the probe that succeeded: a Pi reachable all along (through another
    VPS) recovers in 0, not in the time one probe takes."""
    while time.monotonic() - since < timeout:
        probed = time.monotonic()
        if reachable(t, via):
            return max(0.0, probed - since)
        time.sleep(0.2)
    return None


class PortKnocker:
    """Connection attempts to a public tunnel port every 0.1 s, as scanners send on the internet."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                socket.create_connection((VPS, self.port), timeout=1).close()
            except OSError:
                pass
            self._stop.wait(0.1)

    def __enter__(self) -> "PortKnocker":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Setup:
    """Who keeps the Pi's tunnel up: the account running its ssh and the daemon restarting it."""

    name: str = "pitunnel"
    user: str = "pitunnel"
    daemon: str = "autossh"


PITUNNEL = Setup()


def _flow_rules(pi: str, port: int) -> list[list[str]]:
    address = str(_plan().host(pi).address)
    return [["-s", address, "-p", "tcp", "--sport", str(port), "-j", "DROP"],
            ["-d", address, "-p", "tcp", "--dport", str(port), "-j", "DROP"]]


def _pi(pi: str, script: str) -> str:
    return exec_in(record(pi), script, check=False, timeout=60).stdout


class SilentDrop:
    """The Pi's tunnel flow vanishes for good: not one more packet of it passes either way (as
    when the home router reboots or the public address changes), so no FIN or RST ever reaches
    the VPS. New flows pass. Undone when leaving the `with` block."""

    def __init__(self, pi: str, setup: Setup = PITUNNEL, *, reconnect: bool = True) -> None:
        self.pi = pi
        self.setup = setup
        self.reconnect = reconnect
        self.rules: list[list[str]] = []

    def __enter__(self) -> float:
        out = _pi(self.pi, "ss -Htn state established '( dport = :12345 )' | awk '{print $3}'")
        ports = [int(a.rsplit(":", 1)[1]) for a in out.split() if ":" in a]
        if not ports:
            raise RuntimeError(f"{self.pi} has no tunnel connection to drop")
        for port in ports:
            for rule in _flow_rules(self.pi, port):
                run(["iptables", "-w", "5", "-I", FWD_CHAIN, "1", *rule])
                self.rules.append(rule)
        if self.reconnect:
            _pi(self.pi, f"pkill -KILL -x ssh -u {self.setup.user}")  # the Pi notices and reconnects at once
        return time.monotonic()

    def __exit__(self, *exc: object) -> None:
        for rule in self.rules:
            run(["iptables", "-w", "5", "-D", FWD_CHAIN, *rule], check=False)


def silent_drop(pi: str, *, timeout: float = 120, setup: Setup = PITUNNEL) -> float | None:
    t = target(pi)
    with PortKnocker(t.ssh_port), SilentDrop(pi, setup) as ended:
        return wait_recovered(t, ended, timeout)


def router_reboot(pi: str, *, timeout: float = 120, setup: Setup = PITUNNEL, seconds: float = 10) -> float | None:
    """The home router reboots: the Pi's link is down for `seconds`, and the router forgets its NAT
    state, so the tunnel's old flow is dead for good (not one more packet of it passes, no FIN or
    RST) while new flows pass. Nothing tells the Pi's ssh; recovery counts from the link coming back."""
    t = target(pi)
    with PortKnocker(t.ssh_port), SilentDrop(pi, setup, reconnect=False):
        ended = link_down(pi, seconds=seconds)
        return wait_recovered(t, ended, timeout)


def nat_forgets(pi: str, *, timeout: float = 120, setup: Setup = PITUNNEL) -> float | None:
    """A carrier-grade NAT forgets the tunnel's flow: from now on not one packet of it passes either
    way, while both links stay up and nothing is killed. No host sees an event: only keepalives can
    tell. Recovery counts from the moment the flow is dropped."""
    t = target(pi)
    with PortKnocker(t.ssh_port), SilentDrop(pi, setup, reconnect=False) as started:
        return wait_recovered(t, started, timeout)


@contextmanager
def unplugged(pi: str) -> Iterator[None]:
    """The Pi's link is down inside the `with` block, and back up when it ends."""
    veth = _plan().host(pi).veth
    run(["ip", "link", "set", veth, "down"])
    try:
        yield
    finally:
        run(["ip", "link", "set", veth, "up"])


@contextmanager
def away_from_home(pi: str) -> Iterator[Callable[[], int]]:
    """The laptop is away from the Pi's home inside the `with` block: a connection it opens to the Pi's
    address gets no answer (as a private address of another network), while the Pi's own traffic, and
    the laptop's to the VPS, pass. Yields a counter: how many packets the laptop has sent to the Pi's
    address since the block began, on connections it opened itself (a firewall rule's count). Undone
    when the block ends; `lab.down` removes it too."""
    address = str(make_plan(LabState.load().pis).host(pi).address)
    # no target: it counts alone; what the laptop sends on connections it opened itself (not the lab's apt
    # proxy answering the Pi's downloads, a stand-in for the Debian mirror)
    count = ["-d", address, "-m", "conntrack", "--ctdir", "ORIGINAL", "-m", "comment", "--comment",
             f"pitunnel-lab count {pi}"]
    chain = laptop_chain()
    run(["iptables", "-w", "5", "-I", chain, "1", *count])

    def sent() -> int:
        listing = run(["iptables", "-w", "5", "-L", chain, "-v", "-x", "-n"]).stdout
        return sum(int(line.split()[0]) for line in listing.splitlines() if f"pitunnel-lab count {pi} " in line + " ")

    try:
        with _laptop_drops(["-d", address]):
            yield sent
    finally:
        run(["iptables", "-w", "5", "-D", chain, *count], check=False)


@contextmanager
def vps_dropped() -> Iterator[None]:
    """The laptop's new connections to the VPS get no answer inside the `with` block (a VPS that is down, or a
    provider firewall dropping packets), while the Pis' traffic passes. Undone when the block ends; `lab.down`
    removes it too."""
    with _laptop_drops(["-d", VPS]):
        yield


@contextmanager
def port_dropped(port: int) -> Iterator[None]:
    """A firewall in front of the VPS (the provider's security group) drops the laptop's new connections to
    this one port of the VPS inside the `with` block; every other port, and the Pis' traffic, pass. Undone when
    the block ends; `lab.down` removes it too."""
    with _laptop_drops(["-d", VPS, "-p", "tcp", "--dport", str(port)]):
        yield


@contextmanager
def _laptop_drops(match: list[str]) -> Iterator[None]:
    """The laptop's new connections that `match` (iptables words) get no answer inside the `with` block."""
    rule = [*match, "-m", "conntrack", "--ctstate", "NEW", "-j", "DROP"]
    chain = laptop_chain()
    run(["iptables", "-w", "5", "-A", chain, *rule])
    try:
        yield
    finally:
        run(["iptables", "-w", "5", "-D", chain, *rule], check=False)


def link_down(pi: str, *, seconds: float) -> float:
    """The Pi's link is down for `seconds`, then back."""
    with unplugged(pi):
        time.sleep(seconds)
    return time.monotonic()


def _in(host: str, script: str) -> float:
    exec_in(record(host), script, check=False, timeout=60)
    return time.monotonic()


def reboot(host: str, *, power_cut: bool) -> float:
    """The host restarts (a power cut: nothing it had open is closed); ends when its systemd is up."""
    state = LabState.load()
    machine.reboot(make_plan(state.pis, state.vpses).host(host), state, power_cut=power_cut)
    return time.monotonic()


@contextmanager
def powered_off(host: str) -> Iterator[None]:
    """The host has lost power inside the `with` block (nothing it had open was closed; its address answers
    nobody); it boots when the block ends, which returns once its systemd is up."""
    state = LabState.load()
    plan = make_plan(state.pis, state.vpses).host(host)
    machine.halt(plan, state, power_cut=True)
    try:
        yield
    finally:
        machine.start(plan, LabState.load())


def vps_power_cut(vps: str = "vps", *, seconds: float = 60) -> float:
    """A VPS loses power for `seconds`, then boots; ends when its systemd is up."""
    with powered_off(vps):
        time.sleep(seconds)
    return time.monotonic()


def vps_unreachable_at_boot(pi: str, *, seconds: float) -> float:
    """The Pi loses power and boots while it cannot reach the VPS (its packets are dropped, not
    refused), which stays so for `seconds` after the boot; ends when the VPS is reachable again."""
    plan = _plan()
    rule = ["-s", str(plan.host(pi).address), "-d", str(plan.vps.address), "-j", "DROP"]
    run(["iptables", "-w", "5", "-I", FWD_CHAIN, "1", *rule])
    try:
        reboot(pi, power_cut=True)
        time.sleep(seconds)
    finally:
        run(["iptables", "-w", "5", "-D", FWD_CHAIN, *rule], check=False)
    return time.monotonic()


FAULTS: dict[str, Callable[[str, Setup], float]] = {
    "link-down-20s": lambda pi, s: link_down(pi, seconds=20),
    "link-down-60s": lambda pi, s: link_down(pi, seconds=60),
    "link-down-10min": lambda pi, s: link_down(pi, seconds=600),
    "kill-ssh": lambda pi, s: _in(pi, f"pkill -KILL -x ssh -u {s.user}"),
    "kill-autossh": lambda pi, s: _in(pi, f"pkill -KILL -x {s.daemon}"),
    "stop-ssh": lambda pi, s: _in(pi, f"pkill -STOP -x ssh -u {s.user}"),
    "restart-vps-sshd": lambda pi, s: _in("vps", "systemctl restart ssh"),
    "restart-nginx": lambda pi, s: _in("vps", "systemctl restart nginx"),
    "reboot-vps": lambda pi, s: reboot("vps", power_cut=False),
    "reboot-pi": lambda pi, s: reboot(pi, power_cut=True),
    "vps-unreachable-at-boot": lambda pi, s: vps_unreachable_at_boot(pi, seconds=30),
    # with two VPSes the Pi stays reachable through the other throughout: its recovery is 0
    "vps-power-cut": lambda pi, s: vps_power_cut("vps", seconds=60),
}


def inject(name: str, pi: str = "pi1", *, timeout: float = 120, setup: Setup = PITUNNEL) -> float | None:
    """Inject a fault (with traffic knocking on the Pi's public port) and measure recovery."""
    t = target(pi)
    if not wait_recovered(t, time.monotonic(), 60):
        raise RuntimeError(f"{pi} is not reachable through the VPS before the fault: provision and verify first")
    if name == "silent-drop":
        return silent_drop(pi, timeout=timeout, setup=setup)
    if name == "router-reboot":
        return router_reboot(pi, timeout=timeout, setup=setup)
    if name == "nat-forgets":
        return nat_forgets(pi, timeout=timeout, setup=setup)
    with PortKnocker(t.ssh_port):
        ended = FAULTS[name](pi, setup)
        return wait_recovered(t, ended, timeout)


NAMES = ("silent-drop", "router-reboot", "nat-forgets", *FAULTS)


def tunnel_bytes(pi: str, seconds: float) -> tuple[int, int]:
    """(bytes, packets) of the Pi's tunnel traffic to and from the VPS's sshd, both directions, IP and
    TCP headers included, counted for `seconds` on the lab's forwarding path (iptables counters on the
    Pi's side of its home NAT, where every packet of the flow passes)."""
    plan = _plan()
    address, vps, port = str(plan.host(pi).address), str(plan.vps.address), str(plan.vps.ssh_port)
    rules = [["-s", address, "-d", vps, "-p", "tcp", "--dport", port, "-m", "comment", "--comment", "pitunnel-count"],
             ["-s", vps, "-d", address, "-p", "tcp", "--sport", port, "-m", "comment", "--comment", "pitunnel-count"]]
    for rule in rules:
        run(["iptables", "-w", "5", "-I", FWD_CHAIN, "1", *rule])
    try:
        time.sleep(seconds)
        listing = run(["iptables", "-w", "5", "-L", FWD_CHAIN, "-n", "-v", "-x"]).stdout
    finally:
        for rule in rules:
            run(["iptables", "-w", "5", "-D", FWD_CHAIN, *rule], check=False)
    total_bytes = total_packets = 0
    for line in listing.splitlines():
        if "pitunnel-count" in line:
            packets, size = line.split()[:2]
            total_packets += int(packets)
            total_bytes += int(size)
    return total_bytes, total_packets


def tunnel_rss_kb(pi: str, setup: Setup = PITUNNEL) -> int:
    """Resident memory of the tunnel (its daemon plus its ssh) on the Pi, in KiB."""
    out = _pi(pi, f"ps -o rss= -u {setup.user}")
    return sum(int(x) for x in out.split())


def tunnel_pss_kb(pi: str, setup: Setup = PITUNNEL) -> int:
    """Proportional memory of the tunnel's processes on the Pi, in KiB: pages shared between them (two
    autossh and two ssh with two VPSes) counted once in all, where RSS counts them in each."""
    out = _pi(pi, f"for p in $(pgrep -u {setup.user}); do "
                  "awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup 2>/dev/null; done")
    return sum(int(x) for x in out.split())


__all__ = ["NAMES", "PITUNNEL", "PortKnocker", "Setup", "SilentDrop", "Target", "inject", "reachable", "target",
           "tunnel_bytes", "tunnel_pss_kb", "tunnel_rss_kb", "port_dropped", "powered_off", "unplugged", "vps_addresses",
           "vps_power_cut", "wait_recovered"]
