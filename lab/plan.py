"""The lab's address plan: names, segments and addresses, all inside 198.18.0.0/15.

Pure: nothing here touches the machine. `check_no_clash` reads the routing table
that `netinfo` gathered and refuses a plan that would overlap anything not ours.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
INTERNET = ipaddress.IPv4Network("198.18.0.0/24")
LAPTOP_ADDR = ipaddress.IPv4Address("198.18.0.1")
VPS_ADDR = ipaddress.IPv4Address("198.18.0.10")  # the first VPS; a second (lab.up(vpses=2)) is at .11
MAX_VPSES = 2
VPS_SSH_PORT = 12345  # the seed's VPS sshd port: "not 22", as on many cheap VPSes
APT_PROXY_PORT = 3150  # not 3142, where a system apt-cacher-ng may already listen
INET_BRIDGE = "pt-inet"
MAX_PIS = 50
BRIDGE_PREFIX = "pt-"


@dataclass(frozen=True)
class HostPlan:
    """Where one lab host lives on the lab's networks."""

    name: str
    role: str  # "vps" | "pi"
    bridge: str
    address: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address
    prefix: int
    ssh_port: int
    public_address: ipaddress.IPv4Address  # what the VPS sees as this host's source address

    @property
    def veth(self) -> str:
        """The host side of the container's veth, as systemd-nspawn names it."""
        return f"vb-{self.name}"[:15]


@dataclass(frozen=True)
class HomePlan:
    """A Pi's home network: a bridge on this machine acting as the home router with NAT."""

    bridge: str
    network: ipaddress.IPv4Network
    router: ipaddress.IPv4Address  # the router's address inside the home
    public_address: ipaddress.IPv4Address  # the router's address on the internet segment


@dataclass(frozen=True)
class LabPlan:
    vpses: tuple[HostPlan, ...]  # "vps", then "vps2" (lab.up(vpses=2)): every Pi keeps a tunnel to each
    pis: tuple[HostPlan, ...]
    homes: tuple[HomePlan, ...]

    @property
    def vps(self) -> HostPlan:
        """The first VPS (the only one unless the lab was asked for two)."""
        return self.vpses[0]

    @property
    def hosts(self) -> tuple[HostPlan, ...]:
        return (*self.vpses, *self.pis)

    @property
    def bridges(self) -> tuple[str, ...]:
        return (INET_BRIDGE, *(home.bridge for home in self.homes))

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network, ...]:
        return (INTERNET, *(home.network for home in self.homes))

    def host(self, name: str) -> HostPlan:
        for host in self.hosts:
            if host.name == name:
                return host
        known = ", ".join(h.name for h in self.hosts)
        raise KeyError(f"no lab host named {name!r} (lab hosts: {known})")


def make_plan(pis: int, vpses: int = 1) -> LabPlan:
    if not 1 <= pis <= MAX_PIS:
        raise ValueError(f"--pis must be from 1 to {MAX_PIS}, not {pis}")
    if not 1 <= vpses <= MAX_VPSES:
        raise ValueError(f"--vpses must be from 1 to {MAX_VPSES}, not {vpses}")
    vps_hosts = tuple(HostPlan(
        name="vps" if index == 0 else f"vps{index + 1}", role="vps", bridge=INET_BRIDGE, address=VPS_ADDR + index,
        gateway=LAPTOP_ADDR, prefix=INTERNET.prefixlen, ssh_port=VPS_SSH_PORT, public_address=VPS_ADDR + index,
    ) for index in range(vpses))
    homes: list[HomePlan] = []
    hosts: list[HostPlan] = []
    for index in range(1, pis + 1):
        network = ipaddress.IPv4Network(f"198.19.{index}.0/24")
        home = HomePlan(
            bridge=f"pt-home{index}", network=network, router=network.network_address + 1,
            public_address=INTERNET.network_address + 100 + index,
        )
        homes.append(home)
        hosts.append(HostPlan(
            name=f"pi{index}", role="pi", bridge=home.bridge, address=network.network_address + 2,
            gateway=home.router, prefix=network.prefixlen, ssh_port=22, public_address=home.public_address,
        ))
    return LabPlan(vpses=vps_hosts, pis=tuple(hosts), homes=tuple(homes))


def clashes(plan: LabPlan, routes: list[tuple[str, str]]) -> list[str]:
    """Routes (destination, device) not made by the lab that overlap the lab's range.

    `routes` come from `ip -j route` and `ip -j addr`; "default" routes never clash.
    """
    found: list[str] = []
    for dest, dev in routes:
        if dest == "default" or dev.startswith(BRIDGE_PREFIX):
            continue
        try:
            net = ipaddress.ip_network(dest, strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.overlaps(LAB_RANGE):
            found.append(f"{dest} dev {dev}")
    return found
