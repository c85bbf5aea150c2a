"""`ssh pi1` from anywhere: each Pi's routes through its tunnels, written as OpenSSH Host blocks.

Pure: reads no network and writes no file (sshfiles.py writes them). A route never uses a Pi's own address:
it goes through the Pi's ssh tunnel on one of its VPSes, to the VPS's public port for a public tunnel, or
with the VPS as jump host to the tunnel's loopback listener. A Pi with tunnels on several VPSes gets a
ProxyCommand that tries each VPS in inventory order (`ssh -W` through it; the next when one fails), and one
alias per route (`pi1.vps2`). Every hop's host key is checked as pitunnel's own connections check it: under
the name it is filed under in pitunnel's known_hosts (HostKeyAlias where that is not the address ssh
connects to), or against the inventory's pin alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from . import sshconf
from .hostkeys import known_name
from .inventory import Inventory, PiSpec
from .inventory.model import LOOPBACK, HostSpec
from .quoting import sh
from .role import Role

LAPTOP = Role("laptop")


@dataclass(frozen=True)
class PiRoute:
    """One way to the Pi's sshd: through `vps`, to `host`:`port` (its public port, or 127.0.0.1 there)."""

    vps: str
    host: str
    port: int
    jump: bool  # through a login on the VPS (a loopback-only tunnel), else straight to its public port


@dataclass(frozen=True)
class Block:
    """One `Host` block of the config."""

    alias: str
    comment: str
    user: str
    identities: tuple[Path, ...]
    identities_only: bool
    known_hosts: Path
    key_alias: str | None
    connect_timeout: int
    hostname: str | None = None
    port: int | None = None
    proxy_jump: str | None = None
    proxy_command: str | None = None


@dataclass(frozen=True)
class Written:
    """What `ssh-config` makes: the config's text, and the pinned host keys' file (empty: no host has a pin)."""

    config: str
    pins: str


def routes(inv: Inventory, pi: PiSpec) -> list[PiRoute]:
    """The Pi's routes, one per VPS that holds its ssh tunnel, in inventory order."""
    found = []
    for path in pi.paths():
        tunnel = path.ssh_tunnel
        if tunnel is None:
            continue
        vps = inv.vps_of(path)
        found.append(PiRoute(vps.name, vps.address, tunnel.remote_port, jump=False) if tunnel.public else
                     PiRoute(vps.name, LOOPBACK, tunnel.remote_port, jump=True))
    return found


def key_name(hop: sshconf.Hop, spec: HostSpec) -> str:
    """The name the host's key is filed under in known_hosts, as pitunnel's own connections look it up."""
    return hop.known_name if hop.hostname else spec.name


def render(inv: Inventory, config_path: Path, pins_path: Path) -> Written:
    """The Host blocks for every Pi that has an ssh tunnel, and for each of its VPSes (as `ssh VPS` reaches it).
    `config_path`: where the text will be (the ProxyCommand of a Pi with several routes runs `ssh -F` on it);
    `pins_path`: where the inventory's pinned host keys will be."""
    config = sshconf.load(inv.settings.ssh_config)
    make = _Maker(inv.settings.known_hosts.absolute(), pins_path)
    pis = {name: routes(inv, pi) for name, pi in inv.pis.items()}
    used = [v for v in inv.vps.values() if any(r.vps == v.name for found in pis.values() for r in found)]
    blocks = [make.block(v, sshconf.resolve(v, config).target, alias=v.name, comment=f"the VPS {v.name}: its own sshd",
                         hostname=v.address, port=v.port) for v in used]
    for name, found in pis.items():
        pi = inv.pis[name]
        hop = sshconf.resolve(pi, config).target
        if len(found) == 1:
            blocks.append(make.pi_block(pi, hop, found[0], alias=name))
        elif found:
            timeout = sum(int(inv.vps[r.vps].connect_timeout) for r in found) + int(pi.connect_timeout)
            blocks.append(make.block(pi, hop, alias=name, timeout=timeout, proxy_command=chain(found, config_path),
                                     comment=f"{name} through {', then '.join(r.vps for r in found)} (each VPS as "
                                             "jump host; the next when one fails)"))
            blocks += [make.pi_block(pi, hop, r, alias=f"{name}.{r.vps}") for r in found]
    text = LAPTOP.render("ssh_config.j2", blocks=blocks, inventory=inv.path.absolute())
    pins = "".join(f"{line}\n" for line in dict.fromkeys(make.pins))
    return Written(text, f"{LAPTOP.defaults['marker']}: host keys pinned in {inv.path.absolute()} (host_key)\n{pins}" if pins else "")


def chain(found: list[PiRoute], config_path: Path) -> str:
    """A ProxyCommand that tries each route in turn, each through its VPS (`ssh -W`, with the same config): a
    VPS that does not answer within its ConnectTimeout, refuses the login, or has no listener for the tunnel
    makes ssh exit 255 before a byte reached the Pi's side, and the next VPS is tried. A public tunnel is
    reached at its listener on the VPS's loopback (it listens on every address)."""
    tries = [f"ssh -F {sh(config_path)} -W {LOOPBACK}:{r.port} {sh(r.vps)}" for r in found]
    inner = " || ".join([*tries[:-1], f"exec {tries[-1]}"])
    return f"sh -c {sh(inner)}".replace("%", "%%")  # ssh expands %-tokens in a ProxyCommand


@dataclass
class _Maker:
    """Blocks for one config: every host key checked against `known_hosts`, or a pin against `pins_path`."""

    known_hosts: Path
    pins_path: Path
    pins: list[str] = field(default_factory=list)  # `name type base64` of each pinned host key

    def pi_block(self, pi: PiSpec, hop: sshconf.Hop, route: PiRoute, *, alias: str) -> Block:
        how = (f"{route.vps}'s public port {route.port}" if not route.jump else
               f"{route.vps} as jump host, to its tunnel at {LOOPBACK}:{route.port} there")
        return self.block(pi, hop, alias=alias, comment=f"{pi.name} through {how}", hostname=route.host,
                          port=route.port, proxy_jump=route.vps if route.jump else None)

    def block(self, spec: HostSpec, hop: sshconf.Hop, *, alias: str, comment: str, timeout: int | None = None,
              hostname: str | None = None, port: int | None = None, proxy_jump: str | None = None,
              proxy_command: str | None = None) -> Block:
        """A host's block: its login (user, keys) as pitunnel's own, its host key under the name pitunnel files
        it (HostKeyAlias unless that is the name ssh looks up for where it connects)."""
        name = key_name(hop, spec)
        if spec.host_key:  # the inventory's pin, and only it, as pitunnel's own connections accept
            self.pins.append(f"{name} {' '.join(spec.host_key.split()[:2])}")
        looked_up = known_name(hostname, port or 22) if hostname else None
        return Block(alias=alias, comment=comment, user=hop.user,
                     identities=tuple(i.path for i in hop.identities if i.source != sshconf.DEFAULT),
                     identities_only=hop.identities_only,
                     known_hosts=self.pins_path if spec.host_key else self.known_hosts,
                     key_alias=None if name == looked_up else name, connect_timeout=timeout or int(spec.connect_timeout),
                     hostname=hostname, port=port, proxy_jump=proxy_jump, proxy_command=proxy_command)
