"""Where and as whom to connect: the inventory's host, with what an OpenSSH client config says about it.

Pure: reads no network. `resolve()` gives the route to one host (the host itself and any ProxyJump hops
before it), each setting with where it came from: "inventory" (written there, itself or under
defaults:), "ssh_config" (the file `settings: ssh_config:` names) or "default". The inventory wins
wherever both say something; the inventory's `address` is the name looked up in the ssh config, as
`ssh ADDRESS` would (so `address: mypi` with `Host mypi` / `HostName 192.168.1.20` connects there).
"""

from __future__ import annotations

import getpass
import glob
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import paramiko

from .hostkeys import known_name
from .inventory import HostSpec

INVENTORY: Final = "inventory"
SSH_CONFIG: Final = "ssh_config"
DEFAULT: Final = "default"
MAX_JUMPS: Final = 8  # ProxyJump hops, all told: a loop in the ssh config ends here, with an error
MAX_INCLUDE_DEPTH: Final = 16  # Include within Include, as OpenSSH's READCONF_MAX_DEPTH
# the identities OpenSSH tries when nothing names one (its order for the key types paramiko can use)
DEFAULT_IDENTITIES: Final = ("~/.ssh/id_rsa", "~/.ssh/id_ecdsa", "~/.ssh/id_ed25519")


class BadSshConfig(Exception):
    """The ssh config says something pitunnel cannot follow; the message names it."""


@dataclass(frozen=True)
class Identity:
    path: Path
    source: str  # INVENTORY, SSH_CONFIG or DEFAULT


@dataclass(frozen=True)
class Hop:
    """One SSH server to log in to: the host itself, or a jump host on the way."""

    alias: str  # the name as written: the inventory's address, or an entry of a ProxyJump
    hostname: str
    port: int
    user: str
    identities: tuple[Identity, ...]  # key files to try after the agent's keys, in order
    identities_only: bool  # IdentitiesOnly: only these files, and of the agent's keys only theirs
    host_key_alias: str | None = None  # HostKeyAlias: the name its host key is filed under instead
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # setting -> where from

    @property
    def known_name(self) -> str:
        """The name its host key is looked up under in known_hosts, as OpenSSH files it."""
        return self.host_key_alias or known_name(self.hostname, self.port)

    @property
    def where(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class Route:
    target: Hop
    jumps: tuple[Hop, ...] = ()  # ProxyJump hops, the first one connected to directly
    jump_source: str = DEFAULT  # where the jumps came from

    def describe(self) -> list[str]:
        """Each connection setting and where it came from, one per line (for -v)."""
        return describe_hop(self.target) + [
            f"jump {hop.alias}: " + ", ".join(describe_hop(hop)) + f" ({self.jump_source} ProxyJump)"
            for hop in self.jumps]


def describe_hop(hop: Hop) -> list[str]:
    s = hop.sources
    keys = ", ".join(f"{i.path} ({i.source})" for i in hop.identities) or "none"
    return [f"hostname {hop.hostname} ({s.get('hostname', DEFAULT)})", f"port {hop.port} ({s.get('port', DEFAULT)})",
            f"user {hop.user} ({s.get('user', DEFAULT)})",
            "keys: ssh-agent" + (" (only for these)" if hop.identities_only else "") + f", then {keys}",
            f"host key: {hop.known_name} in known_hosts" + (f" (HostKeyAlias, {SSH_CONFIG})" if hop.host_key_alias
                                                            else "")]


def load(path: Path | None) -> paramiko.SSHConfig | None:
    """The ssh config at `path` (None: none), its Includes followed (paramiko ignores them). Match is
    paramiko's to follow."""
    if path is None:
        return None
    try:
        text = "\n".join(_included(path, depth=0)) + "\n"
    except OSError as exc:
        raise BadSshConfig(f"cannot read the ssh config {path}: {exc.strerror or exc}") from None
    try:
        return paramiko.SSHConfig.from_text(text)
    except paramiko.ssh_exception.ConfigParseError as exc:
        raise BadSshConfig(f"cannot read the ssh config {path}: {exc}") from None


def _included(file: Path, *, depth: int) -> Iterator[str]:
    """The lines of `file` with each `Include` replaced by the files it names, as OpenSSH reads them: a
    relative path is under ~/.ssh, a glob gives its files in sorted order, a missing file is nothing, and at
    most MAX_INCLUDE_DEPTH deep. After an included file, `Host *` makes what follows apply to every host
    again, as it did before the Include. An Include under a Host or Match line (other than `Host *` or
    `Match all`) would apply only to the hosts that block matches, which paramiko cannot express: refused,
    naming the file and line."""
    conditional = False  # under a Host or Match line that does not match every host
    for number, line in enumerate(file.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        found = _SETTING.match(line)
        if found is None or line.lstrip().startswith("#"):
            yield line
            continue
        key = found.group(1).lower()
        if key not in ("host", "match", "include"):
            yield line
            continue
        args = _words(found.group(2), file, number)
        if key in ("host", "match"):
            conditional = not ((key == "host" and args == ["*"]) or (key == "match" and [a.lower() for a in args] == ["all"]))
            yield line
            continue
        if conditional:
            raise BadSshConfig(f"{file}:{number}: Include under a Host or Match line applies only to the hosts that "
                               "block matches, which pitunnel cannot follow: move it above the first Host line (or "
                               "under 'Host *'), or set 'ssh_config: none' in the inventory")
        if depth >= MAX_INCLUDE_DEPTH:
            raise BadSshConfig(f"{file}:{number}: Include nested more than {MAX_INCLUDE_DEPTH} deep (a file that "
                               "includes itself?)")
        for pattern in args:
            where = Path(pattern).expanduser()
            where = where if where.is_absolute() else Path("~/.ssh").expanduser() / where
            for name in sorted(glob.glob(str(where))):
                try:
                    yield from _included(Path(name), depth=depth + 1)
                except OSError as exc:
                    raise BadSshConfig(f"{file}:{number}: cannot read {name} (Include): {exc.strerror or exc}") from None
                yield "Host *"


_SETTING: Final = re.compile(r"\s*([A-Za-z]+)(?:\s*=\s*|\s+)(.*)")


def _words(text: str, file: Path, number: int) -> list[str]:
    """A line's arguments, quotes removed, as OpenSSH splits them."""
    try:
        return shlex.split(text, comments=False, posix=True)
    except ValueError:
        raise BadSshConfig(f"{file}:{number}: unbalanced quotes") from None


def resolve(spec: HostSpec, config: paramiko.SSHConfig | None) -> Route:
    """The route to `spec`'s host: the inventory's settings, then the ssh config's, then the defaults."""
    # a Pi without an address (`address` is its name) is no name to look up: its tunnel is the way, not a Host entry
    found = {"hostname": spec.address} if getattr(spec, "tunnel_only", False) else _lookup(config, spec.address)
    given = spec.given
    sources: dict[str, str] = {}

    def pick(setting: str, inventory_key: str, inventory_value: Any, default: Any) -> Any:
        if inventory_key in given:
            sources[setting] = INVENTORY
            return inventory_value
        if setting in found:
            sources[setting] = SSH_CONFIG
            return found[setting]
        sources[setting] = DEFAULT
        return default

    hostname = found.get("hostname", spec.address)
    sources["hostname"] = SSH_CONFIG if hostname != spec.address else INVENTORY
    port = _port(pick("port", "port", spec.port, spec.port), spec.address)
    user = str(pick("user", "user", spec.user, spec.user))
    identities = []
    if spec.key is not None:
        identities.append(Identity(spec.key, INVENTORY if "key" in given else DEFAULT))
    identities += [Identity(Path(p).expanduser(), SSH_CONFIG) for p in found.get("identityfile", [])]
    only = found.get("identitiesonly", "no").lower() == "yes"
    if not identities and not only:
        identities = [Identity(Path(p).expanduser(), DEFAULT) for p in DEFAULT_IDENTITIES]
    target = Hop(spec.address, hostname, port, user, tuple(identities), only, found.get("hostkeyalias"),
                 MappingProxyType(sources))
    jumps = _jumps(config, found.get("proxyjump"), depth=0)
    return Route(target, jumps, SSH_CONFIG if jumps else DEFAULT)


def _lookup(config: paramiko.SSHConfig | None, name: str) -> dict[str, Any]:
    if config is None:
        return {"hostname": name}
    found = dict(config.lookup(name))
    if str(found.get("proxycommand", "none")).lower() != "none" and "proxyjump" not in found:
        # going around it would connect some other way than the user set up (a bastion, a VPN helper)
        raise BadSshConfig(f"the ssh config gives {name} a ProxyCommand, which pitunnel does not run: use ProxyJump "
                           "there, or 'ssh_config: none' in the inventory")
    return found


def _port(value: Any, name: str) -> int:
    try:
        port = int(value) if str(value).isascii() else 0  # int() reads '٢٢' as 22: ssh would not
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535:
        raise BadSshConfig(f"the ssh config gives {name} the port {value!r}: use a port from 1 to 65535")
    return port


def _jumps(config: paramiko.SSHConfig | None, proxyjump: str | None, *, depth: int) -> tuple[Hop, ...]:
    """The hops of a ProxyJump value, in order; a hop's own ProxyJump (in the ssh config) comes before it."""
    if proxyjump is None or proxyjump.strip().lower() == "none":
        return ()
    hops: list[Hop] = []
    for entry in (e.strip() for e in proxyjump.split(",") if e.strip()):
        user, name, port = parse_jump(entry)
        found = _lookup(config, name)
        if depth + len(hops) >= MAX_JUMPS:
            raise BadSshConfig(f"ProxyJump {proxyjump!r} leads through more than {MAX_JUMPS} hops (a loop?)")
        hops += _jumps(config, found.get("proxyjump"), depth=depth + len(hops) + 1)
        sources = {"hostname": SSH_CONFIG, "port": SSH_CONFIG if port or "port" in found else DEFAULT,
                   "user": SSH_CONFIG if user or "user" in found else DEFAULT}
        only = found.get("identitiesonly", "no").lower() == "yes"
        identities = tuple(Identity(Path(p).expanduser(), SSH_CONFIG) for p in found.get("identityfile", []))
        if not identities and not only:
            identities = tuple(Identity(Path(p).expanduser(), DEFAULT) for p in DEFAULT_IDENTITIES)
        hops.append(Hop(entry, found.get("hostname", name), _port(port or found.get("port", 22), name),
                        user or found.get("user") or getpass.getuser(), identities, only, found.get("hostkeyalias"),
                        MappingProxyType(sources)))
    return tuple(hops)


def parse_jump(entry: str) -> tuple[str | None, str, int | None]:
    """`[user@]host[:port]` (an IPv6 address in brackets, or an ssh:// URI) as (user, host, port)."""
    text = entry.removeprefix("ssh://")
    user, _, hostport = text.rpartition("@")
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        port = rest.removeprefix(":") or None
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    else:
        host, port = hostport, None
    if not host:
        raise BadSshConfig(f"ProxyJump entry {entry!r} names no host")
    return user or None, host, _port(port, entry) if port else None
