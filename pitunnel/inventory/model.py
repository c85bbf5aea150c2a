"""The inventory as the rest of pitunnel reads it: frozen specs of the settings, each VPS, each Pi and its tunnels,
and each Pi through one of its VPSes (a PiPath: its tunnels with their remote ports there).

The defaults written on these fields are the inventory's defaults for those keys (fields.py takes them from here).
A tunnel's listener on its VPS and its -R (Listener, Forward) are values made from its spec, never parsed back
from the text that spells them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from pitunnel.sshkeys import PublicKey

DEFAULT_BODY_SIZE: Final = "10m"
TUNNEL_USER: Final = "pitunnel"  # the default account that owns the tunnels, on the VPS and on each Pi
AUTO_PORT: Final = 0  # the remote_port of a tunnel written 'auto', until the allocation gives it one


@dataclass(frozen=True, kw_only=True)
class Settings:
    known_hosts: Path  # laptop's known_hosts used to check host keys
    laptop_key: Path | None  # private key whose .pub is pushed to the Pis
    ssh_config: Path | None = None  # an OpenSSH client config to read (HostName, User, Port, ...); None: none
    verify_ca_file: Path | None = None  # CA certificates verify trusts for HTTPS (None: the system's)


@dataclass(frozen=True, kw_only=True)
class HostSpec:
    name: str
    role: str  # "vps" | "pi"
    address: str
    port: int
    user: str
    key: Path | None  # private key for login
    password_file: Path | None  # login password (first contact with a fresh Pi)
    sudo_password_file: Path | None  # None: passwordless sudo, or user is root
    host_key: str | None  # pinned host public key "<type> <base64>"
    connect_timeout: float
    given: frozenset[str] = frozenset()  # the keys the inventory wrote for this host (its own or under defaults:)


LOOPBACK: Final = "127.0.0.1"
EVERY_ADDRESS: Final = "0.0.0.0"


@dataclass(frozen=True)
class Listener:
    """Where a tunnel listens on its VPS: on every address (`public`) or on loopback only, at `port`."""

    public: bool
    port: int

    @property
    def host(self) -> str:
        return EVERY_ADDRESS if self.public else LOOPBACK

    @property
    def spec(self) -> str:
        """`host:port`: as the Pi's -R asks for it, as a key's permitlisten must spell it, and as `ss` prints a
        listening socket's local address."""
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Forward:
    """One -R of a Pi's tunnel: its listener on the VPS, and the Pi's own port that the Pi's ssh forwards what
    arrives there to (on loopback)."""

    listener: Listener
    local_port: int

    @property
    def target(self) -> str:
        """Where the Pi's ssh connects what arrives on the listener: `127.0.0.1:local_port`."""
        return f"{LOOPBACK}:{self.local_port}"

    @property
    def spec(self) -> str:
        """As `ssh -R` takes it: `listen_host:listen_port:127.0.0.1:local_port`."""
        return f"{self.listener.spec}:{self.target}"


@dataclass(frozen=True, kw_only=True)
class TunnelSpec:
    name: str
    kind: str  # "ssh" | "http"
    local_port: int  # port on the Pi
    remote_port: int  # port it listens on: in a PiPath, on that path's VPS; in a PiSpec, on the Pi's first VPS
    public: bool  # ssh only: listen on the VPS's public addresses, not just loopback
    server_name: str | None  # http only: nginx server_name
    path: str | None  # http only: nginx location prefix, "/.../"
    basic_auth_file: Path | None  # http only: local htpasswd file to install on the VPS
    websocket: bool = False  # http only: pass WebSocket upgrades, long proxy timeouts
    client_max_body_size: str = DEFAULT_BODY_SIZE  # http only: nginx size, larger request bodies get 413
    hsts: bool = False  # http only: Strict-Transport-Security on its HTTPS answers
    ports: tuple[tuple[str, int], ...] = ()  # (VPS, remote port) on every VPS of its Pi, once allocated

    @property
    def listener(self) -> Listener:
        """Where this tunnel listens on the VPS of the PiPath holding it (the Pi's first VPS in a PiSpec)."""
        return Listener(self.public, self.remote_port)

    @property
    def forward(self) -> Forward:
        """This tunnel's -R: its listener, forwarded to the Pi's local_port."""
        return Forward(self.listener, self.local_port)

    def port_on(self, vps: str) -> int:
        """The remote port of this tunnel on `vps` (remote_port until the ports per VPS are known)."""
        return dict(self.ports).get(vps, self.remote_port)


# `via:` per Pi: how the laptop reaches it. auto: its address, or through its VPS to its ssh tunnel when
# the address does not answer within connect_timeout; direct: its address only; tunnel: the tunnel only.
VIA: Final = ("auto", "direct", "tunnel")


@dataclass(frozen=True)
class Keepalive:
    """How often the tunnel proves it is alive, and after how many silent probes it gives up: the Pi's
    ServerAlive, and the ClientAlive the VPS should use for it. docs/inventory.md has the trade-off table."""

    server_alive_interval: int
    server_alive_count_max: int
    client_alive_interval: int
    client_alive_count_max: int


# `keepalive:` per Pi. Idle, the tunnel exchanges one probe and its answer per min(ServerAlive,
# ClientAlive) interval; a flow that a NAT forgets is noticed by the Pi after ServerAlive x (CountMax + 1).
KEEPALIVE: Final = {
    "metered": Keepalive(30, 3, 30, 2),
    "default": Keepalive(10, 2, 5, 2),
    "fast": Keepalive(3, 3, 3, 2),
}


LETS_ENCRYPT: Final = "https://acme-v02.api.letsencrypt.org/directory"
LETS_ENCRYPT_STAGING: Final = "https://acme-staging-v02.api.letsencrypt.org/directory"


@dataclass(frozen=True, kw_only=True)
class AcmeSpec:
    """`acme:` of a VPS: certificates from an ACME CA, by certbot on the VPS (http-01 through pitunnel's Nginx)."""

    email: str
    directory: str = LETS_ENCRYPT
    staging: bool = False  # Let's Encrypt's staging directory instead (directory must then be left out)
    ca_bundle: Path | None = None  # local file: the CA certificates certbot trusts for the directory's TLS


STATUS_PAGE_PATH: Final = "/pitunnel-status/"


@dataclass(frozen=True, kw_only=True)
class StatusPageSpec:
    """`status_page:` of a VPS: a page of its tunnels, served by its Nginx behind basic auth (docs/monitoring.md)."""

    basic_auth_file: Path  # local htpasswd file: its users may read the page
    path: str = STATUS_PAGE_PATH  # where the page is, under the VPS's public_name


@dataclass(frozen=True, kw_only=True)
class VpsSpec(HostSpec):
    tunnel_user: str = TUNNEL_USER
    http_port: int = 80
    https_port: int = 443
    tls_certificate: str | None = None  # absolute path on the VPS
    tls_key: str | None = None
    public_name: str | None = None  # the VPS's own DNS name: path-prefix routes are served under it
    acme: AcmeSpec | None = None
    client_alive_interval: int = 5
    client_alive_count_max: int = 2
    port_range: tuple[int, int] = (20000, 29999)
    metrics: bool = False  # Prometheus node exporter with pitunnel's tunnel metrics (docs/monitoring.md)
    metrics_address: str = "127.0.0.1:9100"  # where the exporter listens
    status_page: StatusPageSpec | None = None
    firewall: str = "auto"  # auto: open the published ports in the VPS's host firewall; leave: only warn

    @property
    def own_ports(self) -> frozenset[int]:
        """The ports the VPS's own services listen on, which no tunnel may take: sshd, nginx, and the node
        exporter when metrics are on."""
        exporter = {metrics_port(self.metrics_address)} if self.metrics else set()
        return frozenset({self.port, self.http_port, self.https_port, *exporter})


def metrics_port(address: str) -> int:
    """The port of a checked `metrics_address` (IPv4:port)."""
    return int(address.rpartition(":")[2])


@dataclass(frozen=True, kw_only=True)
class PiSpec(HostSpec):
    """A Pi as the inventory reads it: its VPSes (`vpses`, in inventory order) and its tunnels. The Pi through
    one of them is a PiPath (path(vps), paths()): its tunnels with their remote ports on that VPS."""

    vpses: tuple[str, ...]  # every VPS this Pi keeps a tunnel to, in inventory order (at least one)
    same_port_everywhere: bool = False  # remote_port: auto gives a tunnel the same port on all its VPSes
    tunnel_user: str = TUNNEL_USER
    keepalive: str = "default"  # a name in KEEPALIVE; server_alive_* written in the inventory win over it
    server_alive_interval: int = 10
    server_alive_count_max: int = 2
    disable_password_login: bool = False
    via: str = "auto"  # "auto" | "direct" | "tunnel": how the laptop reaches the Pi (see VIA)
    tunnels: tuple[TunnelSpec, ...] = ()
    # no `address` in the inventory: reached through its ssh tunnel only (via is then "tunnel"), and `address`
    # holds the Pi's name, the name its host key is filed under in known_hosts
    tunnel_only: bool = False

    @property
    def all_vps(self) -> tuple[str, ...]:
        """Every VPS of this Pi, in inventory order."""
        return self.vpses

    @property
    def first_vps(self) -> str:
        """The Pi's first VPS: the laptop's way to its ssh tunnel."""
        return self.vpses[0]

    @property
    def first_path(self) -> PiPath:
        """The Pi through its first VPS: the laptop's way to its ssh tunnel."""
        return self.path(self.first_vps)

    def path(self, vps: str) -> PiPath:
        """This Pi through `vps`: its tunnels with their remote ports on that VPS."""
        return PiPath(self, vps, tuple(t if port == t.remote_port else replace(t, remote_port=port)
                                       for t, port in ((t, t.port_on(vps)) for t in self.tunnels)))

    def paths(self) -> list[PiPath]:
        """The Pi through each of its VPSes, in inventory order."""
        return [self.path(name) for name in self.vpses]


@dataclass(frozen=True)
class PiPath:
    """A Pi through one of its VPSes (one path): the Pi, that VPS's name, and the Pi's tunnels with their
    remote ports on that VPS (made once by PiSpec.path from the allocated ports)."""

    pi: PiSpec
    vps: str
    tunnels: tuple[TunnelSpec, ...]

    @property
    def name(self) -> str:
        """The Pi's name."""
        return self.pi.name

    @property
    def ssh_tunnel(self) -> TunnelSpec | None:
        """The tunnel that carries the laptop's SSH to this Pi through this VPS: its first ssh tunnel to the
        Pi's own sshd port, else its first ssh tunnel (a private one before a public one); None if none."""
        ssh = sorted((t for t in self.tunnels if t.kind == "ssh"), key=lambda t: t.public)
        return next((t for t in ssh if t.local_port == self.pi.port), ssh[0] if ssh else None)


@dataclass(frozen=True)
class Revoked:
    """A Pi that `pitunnel revoke` shut out (the inventory's .revoked.yml file): the keys it had on its VPSes
    (parsed where the file is read; never to be authorised again), when, and its remote ports, reserved on each VPS
    ({vps: {tunnel: port}}) until `ended`."""

    pi: str
    since: str
    keys: tuple[PublicKey, ...] = ()
    ports: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    ended: str = ""  # when it was provisioned again with a new key: its old keys stay refused, nothing else holds

    def reserved(self) -> dict[str, dict[str, int]]:
        """Its ports as the ports file writes them: {vps: {"pi/tunnel": port}}."""
        return {vps: {f"{self.pi}/{t}": p for t, p in ports.items()} for vps, ports in self.ports.items()}


@dataclass(frozen=True)
class Inventory:
    path: Path
    settings: Settings
    vps: Mapping[str, VpsSpec]  # read-only, in file order
    pis: Mapping[str, PiSpec]  # without the revoked Pis (`shut`), but for those being re-provisioned
    revoked: Mapping[str, Revoked] = field(default_factory=dict)  # every revoked Pi, in the inventory or not
    retired: Mapping[str, Revoked] = field(default_factory=dict)  # revocations that ended: their keys stay refused
    shut: Mapping[str, PiSpec] = field(default_factory=dict)  # the revoked Pis still in the inventory, left out of pis
    order: tuple[str, ...] = ()  # every Pi of the file, in its order (the revoked ones too)
    unrecorded: tuple[str, ...] = ()  # "pi/tunnel@vps" of auto ports allocated in memory, not in the ports file

    def host(self, name: str) -> HostSpec:
        """The VPS or Pi called `name`; KeyError if there is none."""
        if name in self.vps:
            return self.vps[name]
        return self.pis[name]

    def hosts(self) -> list[HostSpec]:
        """Every host, VPSes first, in file order."""
        return [*self.vps.values(), *self.pis.values()]

    def vps_of(self, path: PiPath) -> VpsSpec:
        """The VPS of this path of a Pi."""
        return self.vps[path.vps]

    def vpses_of(self, pi: PiSpec) -> list[VpsSpec]:
        """Every VPS of the Pi, in inventory order."""
        return [self.vps[name] for name in pi.all_vps]

    def vpses_of_pis(self, pis: Iterable[PiSpec]) -> list[VpsSpec]:
        """Every VPS of these Pis, once each, in the order the Pis name them."""
        return list({v.name: v for p in pis for v in self.vpses_of(p)}.values())

    def pis_on(self, vps: VpsSpec) -> list[PiPath]:
        """The Pis that keep a tunnel to `vps`, each through it (their remote ports there)."""
        return [pi.path(vps.name) for pi in self.pis.values() if vps.name in pi.vpses]

    def tunnels_on(self, vps: VpsSpec) -> list[tuple[PiPath, TunnelSpec]]:
        """Every tunnel to `vps`, with the path of its Pi there (its remote port on `vps`)."""
        return [(path, t) for path in self.pis_on(vps) for t in path.tunnels]


def acme_name(vps: VpsSpec, tunnel: TunnelSpec) -> str | None:
    """The name an ACME certificate is obtained for, for this http route: its server_name (not a wildcard:
    http-01 cannot prove those), or for a path-prefix route the VPS's public_name; None if it gets none."""
    if vps.acme is None or tunnel.kind != "http":
        return None
    if tunnel.server_name is not None:
        return None if tunnel.server_name.startswith("*.") else tunnel.server_name.lower().rstrip(".")
    return vps.public_name.lower().rstrip(".") if vps.public_name else None


def has_tls(vps: VpsSpec, tunnel: TunnelSpec) -> bool:
    """Is this http route served over HTTPS (a hand-given certificate, or one from ACME)?"""
    return vps.tls_certificate is not None or acme_name(vps, tunnel) is not None
