"""The inventory: which VPS and Pis exist, how to reach them, which tunnels to build.

`load_inventory()` reads the YAML file, checks all of it before any host is
touched, and raises `InventoryError` listing every problem found, each with
file, line, key path, what is wrong and how to fix it. Remote ports written
as ``auto`` (or omitted) are allocated from the VPS's ``port_range`` and
remembered in a lock file next to the inventory (``hosts.yml`` ->
``hosts.ports.yml``) so they never move once given out.

The schema is the ``*_FIELDS`` tables below: key -> check, default.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import paramiko
import yaml

from pitunnel import yamlsrc
from pitunnel.yamlsrc import KeyPath

# ---------------------------------------------------------------------------
# Data model


@dataclass(frozen=True, kw_only=True)
class Settings:
    known_hosts: Path  # laptop's known_hosts used to check host keys
    laptop_key: Path | None  # private key whose .pub is pushed to the Pis


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


DEFAULT_BODY_SIZE: Final = "10m"


@dataclass(frozen=True, kw_only=True)
class TunnelSpec:
    name: str
    kind: str  # "ssh" | "http"
    local_port: int  # port on the Pi
    remote_port: int  # port the tunnel listens on, on the VPS
    public: bool  # ssh only: listen on the VPS's public addresses, not just loopback
    server_name: str | None  # http only: nginx server_name
    path: str | None  # http only: nginx location prefix, "/.../"
    basic_auth_file: Path | None  # http only: local htpasswd file to install on the VPS
    websocket: bool = False  # http only: pass WebSocket upgrades, long proxy timeouts
    client_max_body_size: str = DEFAULT_BODY_SIZE  # http only: nginx size, larger request bodies get 413


@dataclass(frozen=True, kw_only=True)
class VpsSpec(HostSpec):
    tunnel_user: str = "pitunnel"
    http_port: int = 80
    https_port: int = 443
    tls_certificate: str | None = None  # absolute path on the VPS
    tls_key: str | None = None
    client_alive_interval: int = 5
    client_alive_count_max: int = 2
    port_range: tuple[int, int] = (20000, 29999)


@dataclass(frozen=True, kw_only=True)
class PiSpec(HostSpec):
    vps: str
    tunnel_user: str = "pitunnel"
    server_alive_interval: int = 10
    server_alive_count_max: int = 3
    disable_password_login: bool = False
    tunnels: tuple[TunnelSpec, ...] = ()


@dataclass(frozen=True)
class Inventory:
    path: Path
    settings: Settings
    vps: Mapping[str, VpsSpec]  # read-only, in file order
    pis: Mapping[str, PiSpec]

    def host(self, name: str) -> HostSpec:
        """The VPS or Pi called `name`; KeyError if there is none."""
        if name in self.vps:
            return self.vps[name]
        return self.pis[name]

    def hosts(self) -> list[HostSpec]:
        """Every host, VPSes first, in file order."""
        return [*self.vps.values(), *self.pis.values()]

    def vps_of(self, pi: PiSpec) -> VpsSpec:
        return self.vps[pi.vps]

    def tunnels_on(self, vps: VpsSpec) -> list[tuple[PiSpec, TunnelSpec]]:
        return [(pi, t) for pi in self.pis.values() if pi.vps == vps.name for t in pi.tunnels]


# ---------------------------------------------------------------------------
# Problems


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    column: int | None
    key: str  # dotted key path, "" for the file as a whole
    message: str  # what is wrong
    fix: str  # what would be valid

    def __str__(self) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        subject = f"{self.key}: " if self.key else ""
        return f"{where}: {subject}{_sentence(self.message)} Fix: {_sentence(self.fix)}"


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


class InventoryError(Exception):
    def __init__(self, file: Path, problems: list[Problem]) -> None:
        super().__init__(file, problems)
        self.file = file
        self.problems = problems

    def __str__(self) -> str:
        n = len(self.problems)
        header = f"{self.file}: {n} problem{'' if n == 1 else 's'} found:"
        return "\n".join([header, *map(str, self.problems)])


# ---------------------------------------------------------------------------
# Checks: each takes the YAML value and returns the converted value, or
# raises Invalid(what is wrong, how to fix it).


class Invalid(Exception):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message, fix)
        self.message = message
        self.fix = fix


Check = Callable[[Any], Any]

NAME_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,30}")
USER_RE: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_URL_PATH_RE: Final = re.compile(r"/(?:[A-Za-z0-9._~-]+/)*")
_REMOTE_PATH_RE: Final = re.compile(r"/[^\s;{}'\"\\$\x00-\x1f\x7f]*")
_NGINX_SIZE_RE: Final = re.compile(r"[0-9]{1,9}[kKmMgG]?")
SSH_KEY_TYPES: Final = (  # host key types paramiko can check (a host key is never a security-key sk-* type)
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
)
MAX_TEXT: Final = 4096  # characters in any text value (PATH_MAX is 4096 bytes; a host key is under 1000)
MAX_SECRET_BYTES: Final = 4096  # a password file holds one line
MAX_HTPASSWD_BYTES: Final = 1 << 20
MAX_CONNECT_TIMEOUT: Final = 3600
# Accounts a tunnel_user must never name: pitunnel would take them over (usermod --move-home) and delete them
# on teardown (userdel --remove). Debian's base-passwd accounts, and those of common services.
SYSTEM_ACCOUNTS: Final = frozenset({
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data",
    "backup", "list", "irc", "gnats", "nobody", "nogroup", "messagebus", "sshd", "polkitd", "ntp", "ntpsec",
    "chrony", "avahi", "avahi-autoipd", "dnsmasq", "postfix", "exim", "mysql", "postgres", "redis", "nginx",
    "apache", "httpd", "tcpdump", "tss", "uuidd", "usbmux", "rtkit", "pulse", "colord", "saned", "lightdm",
    "statd", "rpc", "rpcuser", "syslog", "dhcpcd", "landscape", "pollinate", "lxd", "dbus", "halt", "shutdown",
    "operator", "ftp", "adm", "kernoops", "geoclue", "speech-dispatcher", "whoopsie", "cups-pk-helper", "sddm",
    "gdm", "fwupd-refresh", "tor", "debian-tor", "bind", "named", "openldap", "docker", "node-exporter",
    "prometheus", "grafana", "git", "gitlab", "jenkins", "nagios", "zabbix", "munin", "mosquitto", "uwsgi",
})
_SYSTEM_ACCOUNT_PREFIXES: Final = ("_", "systemd-", "debian-")  # Debian's newer system accounts: _apt, _chrony
# The login accounts of common server and Raspberry Pi images: somebody's account, never pitunnel's to take over.
IMAGE_LOGINS: Final = frozenset({
    "pi", "admin", "ubuntu", "debian", "ec2-user", "centos", "fedora", "rocky", "almalinux", "opc", "azureuser",
    "cloud-user", "core", "alpine", "arch", "vagrant", "dietpi", "user",
})


def _show(value: object) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{_clip(value)!r} (a string)"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return _clip(repr(value))


def _clip(text: str, limit: int = 60) -> str:
    """`text`, or its start and how long it is, so that a hostile value cannot flood the message."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    fix = "write a whole number without quotes"
    if isinstance(value, bool):
        fix += " (yes/no/on/off/true/false are booleans in YAML)"
    raise Invalid(f"expected a whole number, got {_show(value)}", fix)


def _int_in(low: int, high: int, noun: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = _integer(value)
        if not low <= number <= high:
            raise Invalid(f"{number} is out of range", f"use a {noun} from {low} to {high}")
        return number
    return check


_port = _int_in(1, 65535, "port")
_unprivileged_port = _int_in(1024, 65535, "port")


def _at_least_one(value: Any) -> int:
    number = _integer(value)
    if number < 1:
        raise Invalid(f"{number} is too small", "use a whole number of 1 or more")
    return number


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number of seconds, got {_show(value)}", "write a number such as 10")
    fix = f"use a number of seconds from 1 to {MAX_CONNECT_TIMEOUT}, such as 10"
    if not math.isfinite(value):
        raise Invalid(f"{value} is not a number of seconds", fix)
    if value <= 0:
        raise Invalid(f"{value} is not positive", fix)
    if not 1 <= value <= MAX_CONNECT_TIMEOUT:  # below 1, SSH's whole-second timeout would be 0: no wait at all
        raise Invalid(f"{value} is out of range", fix)
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {_show(value)}", "write true or false without quotes")
    return value


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected text, got {_show(value)}", "write it as text, in quotes if needed")
    if not value.strip():
        raise Invalid("is empty", "give a value, or remove the key")
    if len(value) > MAX_TEXT:
        raise Invalid(f"is {len(value)} characters long", f"use at most {MAX_TEXT} characters")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping, got {_show(value)}", "write indented 'key: value' lines under it")
    return value


def _choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise Invalid(f"{_show(value)} is not allowed", "use one of: " + ", ".join(options))
        return str(value)
    return check


def _name(value: Any) -> str:
    text = _text(value)
    if not NAME_RE.fullmatch(text):
        raise Invalid(f"{_clip(text)!r} is not a valid name", _name_fix(text))
    return text


def _name_fix(text: str) -> str:
    fix = ("use 1-31 lowercase letters, digits or '-', starting with a letter "
           "(names become unix user, file and systemd unit names)")
    suggestion = re.sub(r"[^a-z0-9-]+", "-", text.lower()).lstrip("-0123456789")[:31].rstrip("-")
    return fix + (f", e.g. {suggestion!r}" if NAME_RE.fullmatch(suggestion) else "")


def _user(value: Any) -> str:
    text = _text(value)
    if not USER_RE.fullmatch(text):
        raise Invalid(f"{_clip(text)!r} is not a valid user name",
                      "use up to 32 lowercase letters, digits, '_' or '-', starting with a letter or '_'")
    return text


def _tunnel_user(value: Any) -> str:
    user = _user(value)
    if user == "root":
        raise Invalid("the tunnel must not run as root", "use an unprivileged account such as 'pitunnel'")
    if user in SYSTEM_ACCOUNTS or user.startswith(_SYSTEM_ACCOUNT_PREFIXES):
        raise Invalid(f"'{user}' is a system account: pitunnel would take it over (move its home) and delete it "
                      "on teardown", "use an account only pitunnel uses, such as 'pitunnel'")
    return user


def _is_hostname(text: str) -> bool:
    return (len(text) <= 253 and _HOSTNAME_RE.fullmatch(text) is not None
            and re.fullmatch(r"[0-9.]+", text) is None)  # all digits: a broken IPv4 address


def _address(value: Any) -> str:
    text = _text(value)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _is_hostname(text):
            raise Invalid(f"{_clip(text)!r} is not an IP address or host name",
                          "use an IPv4 or IPv6 address without brackets (203.0.113.10, 2001:db8::1) "
                          "or a DNS name (vps.example.com)") from None
    return text


def _server_name(value: Any) -> str:
    text = _text(value)
    if not _is_hostname(text.removeprefix("*.")):
        raise Invalid(f"{_clip(text)!r} is not a valid server name",
                      "use one host name such as pi1.example.com or *.example.com")
    return text


def _url_path(value: Any) -> str:
    text = _text(value)
    if not _URL_PATH_RE.fullmatch(text):
        raise Invalid(f"{_clip(text)!r} is not a valid location path",
                      "start and end with '/' and use only letters, digits, '.', '_', '~' and '-' "
                      "between slashes, e.g. /pi1/web/")
    if {".", ".."} & set(text.split("/")):
        raise Invalid(f"{_clip(text)!r} has a '.' or '..' segment: nginx resolves those in every request path, so "
                      "this location would never match (or would be another one)",
                      "write the path without '.' and '..' segments, e.g. /pi1/web/")
    return text


def _nginx_size(value: Any) -> str:
    text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not _NGINX_SIZE_RE.fullmatch(text):
        raise Invalid(f"{_show(value)} is not an nginx size",
                      "write a number of bytes with an optional k, m or g suffix, e.g. 10m (0: no limit)")
    return text


def _remote_path(value: Any) -> str:
    text = _text(value)
    if not _REMOTE_PATH_RE.fullmatch(text):
        raise Invalid(f"{_clip(text)!r} is not an absolute path without spaces or quotes",
                      "use an absolute path on the VPS, e.g. /etc/letsencrypt/live/vps.example.com/fullchain.pem")
    return text


def _host_key(value: Any) -> str:
    text = _text(value)
    fix = "paste the host's public key as '<type> <base64>', e.g. the contents of /etc/ssh/ssh_host_ed25519_key.pub"
    parts = text.split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise Invalid("is not an SSH public key", fix)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except binascii.Error:
        raise Invalid("the key's base64 part is malformed", fix) from None
    length = int.from_bytes(blob[:4], "big")
    if blob[4:4 + length] != parts[0].encode():
        raise Invalid(f"the key's base64 part is not a {parts[0]} key (truncated or mixed up?)", fix)
    try:  # the same parser that will check the host's key: a key it cannot read must not get that far
        paramiko.PKey.from_type_string(parts[0], blob)
    except Exception as e:
        raise Invalid(f"the key's base64 part is not a whole {parts[0]} key ({_clip(str(e) or type(e).__name__)})",
                      fix) from None
    return f"{parts[0]} {parts[1]}"  # without the comment


AUTO: Final = "auto"
_AUTO_PORT: Final = 0  # placeholder remote_port until allocation


def _remote_port(value: Any) -> int:
    if value == AUTO:
        return _AUTO_PORT
    if isinstance(value, str):
        raise Invalid(f"{_show(value)} is not a port", "use a port from 1024 to 65535, or auto")
    try:
        return _unprivileged_port(value)
    except Invalid as e:
        raise Invalid(e.message, "use a port from 1024 to 65535 (sshd cannot bind lower ports for the "
                                 "unprivileged tunnel account), or auto") from None


def _port_range(value: Any) -> tuple[int, int]:
    fix = "write [low, high] with 1024 <= low <= high <= 65535, e.g. [20000, 29999]"
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(f"expected a list of two ports, got {_show(value)}", fix)
    try:
        low, high = (_unprivileged_port(v) for v in value)
    except Invalid as e:
        raise Invalid(e.message, fix) from None
    if low > high:
        raise Invalid(f"low end {low} is above high end {high}", fix)
    return low, high


# ---------------------------------------------------------------------------
# Schema


REQUIRED: Final = object()


@dataclass(frozen=True)
class Field:
    check: Check
    default: object = None  # used when the key is absent; REQUIRED if it must be given
    path: bool = False  # a local path: expand ~, resolve relative to the inventory's folder
    exists: bool = False  # ... and the file must exist
    example: str = ""  # shown in the fix for a missing required key
    secret: str = ""  # "password", "htpasswd" or "key": no other user may read it (and a password is one line)


_password_file = Field(_text, None, path=True, exists=True, secret="password")
_private_key = Field(_text, None, path=True, exists=True, secret="key")

SECTION_FIELDS: Final = {
    "settings": Field(_mapping),
    "defaults": Field(_mapping),
    "vps": Field(_mapping),
    "pis": Field(_mapping),
}
SETTINGS_FIELDS: Final = {
    "known_hosts": Field(_text, "~/.ssh/known_hosts", path=True),
    "laptop_key": _private_key,  # absent: ~/.ssh/id_ed25519 if it exists
}
_HOST_FIELDS: Final = {
    "address": Field(_address, REQUIRED, example="<IP address or DNS name>"),
    "port": Field(_port, 22),
    "key": _private_key,
    "password_file": _password_file,
    "sudo_password_file": _password_file,
    "host_key": Field(_host_key),
    "connect_timeout": Field(_seconds, 10.0),
}
DEFAULTS_KEYS: Final = ("port", "user", "key", "password_file", "sudo_password_file", "connect_timeout")
VPS_FIELDS: Final = {
    **_HOST_FIELDS,
    "user": Field(_user, "root"),
    "tunnel_user": Field(_tunnel_user, "pitunnel"),
    "http_port": Field(_port, 80),
    "https_port": Field(_port, 443),
    "tls_certificate": Field(_remote_path),
    "tls_key": Field(_remote_path),
    "client_alive_interval": Field(_at_least_one, 5),
    "client_alive_count_max": Field(_at_least_one, 2),
    "port_range": Field(_port_range, [20000, 29999]),
}
PI_FIELDS: Final = {
    **_HOST_FIELDS,
    "user": Field(_user, "pi"),
    "vps": Field(_name),  # absent: the only VPS
    "tunnel_user": Field(_tunnel_user, "pitunnel"),
    "server_alive_interval": Field(_at_least_one, 10),
    "server_alive_count_max": Field(_at_least_one, 3),
    "disable_password_login": Field(_boolean, False),
    "tunnels": Field(_mapping),
}
TUNNEL_FIELDS: Final = {
    "type": Field(_choice("ssh", "http"), REQUIRED, example="ssh"),
    "local_port": Field(_port),  # absent: 22 for ssh, 80 for http
    "remote_port": Field(_remote_port, AUTO),
    "public": Field(_boolean, False),
    "server_name": Field(_server_name),
    "path": Field(_url_path),
    "basic_auth_file": Field(_text, None, path=True, exists=True, secret="htpasswd"),
    "websocket": Field(_boolean, False),
    "client_max_body_size": Field(_nginx_size, DEFAULT_BODY_SIZE),
}
HTTP_ONLY_KEYS: Final = ("server_name", "path", "basic_auth_file", "websocket", "client_max_body_size")
DEFAULT_LOCAL_PORT: Final = {"ssh": 22, "http": 80}


# ---------------------------------------------------------------------------
# Reading


def ports_file(inventory: Path) -> Path:
    """The lock file recording allocated ports: hosts.yml -> hosts.ports.yml."""
    return inventory.with_name(inventory.stem + ".ports.yml")


def _dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + _clip(part, 40)
    return text


Inherited = Mapping[str, tuple[Any, KeyPath]]  # key -> (value, where it was written)


class _Reader:
    """Reads one parsed inventory, collecting problems instead of stopping at the first."""

    def __init__(self, file: Path, doc: yamlsrc.Document) -> None:
        self.file = file
        self.doc = doc
        self.base = file.resolve().parent
        self.problems: list[Problem] = [
            Problem(file, i.line, i.column, _dotted(i.path), i.message, i.fix) for i in doc.issues
        ]
        # what the cross-checks see, even of hosts and tunnels with other problems (so all are reported at once)
        self.vps_ports: dict[str, dict[str, int]] = {}  # VPS -> its valid port, http_port, https_port
        self.routed: list[tuple[str, str, TunnelSpec]] = []  # (pi, its VPS, tunnel) of every valid tunnel
        self.valid_tunnels: list[TunnelSpec] = []  # the valid tunnels of the Pi `tunnels` read last

    def problem(self, path: KeyPath, message: str, fix: str, *, at_key: bool = False) -> None:
        """Report a problem at `path`'s value, or at its key if `at_key`."""
        line, column = (self.doc.locate_key(path) if at_key else self.doc.locate(path)) or (None, None)
        self.problems.append(Problem(self.file, line, column, _dotted(path), message, fix))

    def line(self, path: KeyPath) -> str:
        position = self.doc.locate(path)
        return f" (line {position[0]})" if position else ""

    def fields(self, raw: Mapping[str, Any], path: KeyPath, table: Mapping[str, Field],
               inherited: Inherited = MappingProxyType({})) -> dict[str, Any] | None:
        """Check `raw` against `table`: every field's value, or None if any was invalid."""
        self.unknown_keys(raw, path, table)
        values: dict[str, Any] = {}
        ok = True
        for key, spec in table.items():
            if key in raw:
                value, where = raw[key], path + (key,)
            elif key in inherited:
                value, where = inherited[key]
            elif spec.default is REQUIRED:
                self.problem(path + (key,), f"required key '{key}' is missing", f"add '{key}: {spec.example}'")
                ok = False
                continue
            else:
                value, where = spec.default, None
            try:
                values[key] = self.convert(key, value, spec)
            except Invalid as e:
                assert where is not None, f"default of {key} is invalid"
                self.problem(where, e.message, e.fix)
                ok = False
        return values if ok else None

    def quiet(self, raw: Mapping[str, Any], table: Mapping[str, Field], keys: Iterable[str],
              inherited: Inherited = MappingProxyType({})) -> dict[str, Any]:
        """The valid values among `keys`, as `fields` finds them, reporting nothing (it did already)."""
        values: dict[str, Any] = {}
        for key in keys:
            spec = table[key]
            if key in raw:
                value = raw[key]
            elif key in inherited:
                value = inherited[key][0]
            elif spec.default is REQUIRED:
                continue
            else:
                value = spec.default
            try:
                values[key] = self.convert(key, value, spec)
            except Invalid:
                pass
        return values

    def convert(self, key: str, value: Any, spec: Field) -> Any:
        if value is None:
            if spec.default is None:
                return None
            if spec.default is REQUIRED:
                raise Invalid("has no value", f"write '{key}: {spec.example}'")
            raise Invalid("has no value",
                          f"give it a value, or remove the key to get the default {json.dumps(spec.default)}")
        value = spec.check(value)
        if not spec.path:
            return value
        try:
            path = Path(value).expanduser()
        except RuntimeError as e:  # ~user that does not exist
            raise Invalid(str(e), "use an existing home directory or an absolute path") from None
        path = path if path.is_absolute() else self.base / path
        try:
            if spec.exists and not path.is_file():
                raise Invalid(f"file {_clip(str(path), 256)} does not exist",
                              "create it or correct the path (relative paths start at the inventory's folder)")
            if spec.secret:
                _check_secret(path, spec.secret)
        except (OSError, ValueError) as e:  # a name too long, a NUL byte, a folder we may not enter
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise Invalid(f"cannot use the path {_clip(str(path), 256)}: {_clip(reason)}",
                          "correct the path (relative paths start at the inventory's folder)") from None
        return path

    def unknown_keys(self, raw: Mapping[str, Any], path: KeyPath, valid: Iterable[str]) -> None:
        valid = list(valid)
        for key in raw:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                fix = f"did you mean '{close[0]}'?" if close else "remove it; valid keys here are " + ", ".join(valid)
                self.problem(path + (key,), f"unknown key '{_clip(key)}'", fix, at_key=True)

    def section(self, top: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = top.get(key)
        if value is None:
            return {}
        try:
            return _mapping(value)
        except Invalid as e:
            self.problem((key,), e.message, e.fix)
            return {}

    def named(self, section: Mapping[str, Any], path: KeyPath) -> Iterable[tuple[str, dict[str, Any], KeyPath, bool]]:
        """The (name, mapping, path, name is valid) entries of a section, skipping non-mappings."""
        for name, raw in section.items():
            where = path + (name,)
            valid = True
            try:
                _name(name)
            except Invalid as e:
                self.problem(where, e.message, e.fix, at_key=True)
                valid = False
            try:
                entry = _mapping({} if raw is None else raw)
            except Invalid as e:
                self.problem(where, e.message, e.fix)
                continue
            yield name, entry, where, valid

    # -- sections ----------------------------------------------------------

    def read(self) -> tuple[Settings | None, dict[str, VpsSpec], dict[str, PiSpec]] | None:
        top = self.doc.data
        if top is None:
            self.problem((), "the inventory is empty", "describe your VPS and Pis, starting from inventory/example.yml")
            return None
        if not isinstance(top, dict):
            self.problem((), f"expected a mapping at the top level, got {_show(top)}",
                         "use the top-level keys settings, defaults, vps and pis (see inventory/example.yml)")
            return None
        self.unknown_keys(top, (), SECTION_FIELDS)
        settings = self.settings(self.section(top, "settings"))
        defaults = self.section(top, "defaults")
        self.unknown_keys(defaults, ("defaults",), DEFAULTS_KEYS)
        inherited = {key: (value, ("defaults", key)) for key, value in defaults.items() if key in DEFAULTS_KEYS}
        vps_section = self.section(top, "vps")
        if not top.get("vps"):
            self.problem(("vps",), "no VPS is defined",
                         "add one under 'vps:', e.g. 'vps: {main: {address: vps.example.com}}'")
        vps = self.all_vps(vps_section, inherited)
        pis_section = self.section(top, "pis")
        pis = self.pis(pis_section, inherited, list(vps_section))
        for name in pis_section:
            if name in vps_section:
                self.problem(("pis", name), f"the name '{name}' is also used by a VPS{self.line(('vps', name))}",
                             "give every host its own name")
        for vps_name, ports in self.vps_ports.items():
            self.check_ports(vps_name, ports, [(pi, t) for pi, on, t in self.routed if on == vps_name])
        return settings, vps, pis

    def settings(self, raw: Mapping[str, Any]) -> Settings | None:
        values = self.fields(raw, ("settings",), SETTINGS_FIELDS)
        if values is None:
            return None
        key: Path | None = values["laptop_key"]
        if "laptop_key" not in raw:
            default = Path("~/.ssh/id_ed25519").expanduser()
            key = default if default.is_file() and _pub(default).is_file() else None
        elif key is not None and not _pub(key).is_file():
            self.problem(("settings", "laptop_key"), f"public key {_pub(key)} does not exist",
                         f"create it with 'ssh-keygen -y -f {key} > {_pub(key)}'")
            return None
        return Settings(known_hosts=values["known_hosts"], laptop_key=key)

    def all_vps(self, section: Mapping[str, Any], inherited: Inherited) -> dict[str, VpsSpec]:
        result: dict[str, VpsSpec] = {}
        for name, raw, path, name_ok in self.named(section, ("vps",)):
            values = self.fields(raw, path, VPS_FIELDS, inherited)
            # keys that must agree are compared even if other keys are wrong (so every problem shows at once)
            quiet = self.quiet(raw, VPS_FIELDS, ("port", "http_port", "https_port", "user", "tunnel_user",
                                                 "tls_certificate", "tls_key"), inherited)
            if name_ok:
                self.vps_ports[name] = {k: quiet[k] for k in ("port", "http_port", "https_port") if k in quiet}
            if not self.vps_agrees(quiet, path) or values is None or not name_ok:
                continue
            result[name] = VpsSpec(name=name, role="vps", **values)
        return result

    def vps_agrees(self, values: Mapping[str, Any], path: KeyPath) -> bool:
        """The VPS's keys that must agree with each other do (those of `values`: the valid ones)."""
        certificate, key = values.get("tls_certificate", False), values.get("tls_key", False)
        if False not in (certificate, key) and (certificate is None) != (key is None):
            missing = "tls_key" if key is None else "tls_certificate"
            other = "tls_certificate" if missing == "tls_key" else "tls_key"
            self.problem(path + (missing,), f"'{missing}' is missing while '{other}' is set",
                         "set both tls_certificate and tls_key, or neither")
            return False
        tunnel_user = values.get("tunnel_user")
        if tunnel_user is not None and tunnel_user == values.get("user"):
            self.problem(path + ("tunnel_user",), f"the tunnel account '{tunnel_user}' is also the login user",
                         "use a separate account for the tunnels, such as 'pitunnel'")
            return False
        if tunnel_user in IMAGE_LOGINS:
            self.problem(path + ("tunnel_user",), _image_login(tunnel_user), _OWN_ACCOUNT)
            return False
        return True

    def pis(self, section: Mapping[str, Any], inherited: Inherited, vps_names: list[str]) -> dict[str, PiSpec]:
        result: dict[str, PiSpec] = {}
        for name, raw, path, name_ok in self.named(section, ("pis",)):
            values = self.fields(raw, path, PI_FIELDS, inherited)
            tunnels = self.tunnels(name, raw.get("tunnels"), path)  # checked even if the Pi is not
            quiet = self.quiet(raw, PI_FIELDS, ("vps", "user", "tunnel_user"), inherited)
            login_taken = quiet.get("tunnel_user") in IMAGE_LOGINS and quiet.get("tunnel_user") != quiet.get("user")
            if login_taken and "user" in quiet:
                self.problem(path + ("tunnel_user",), _image_login(quiet["tunnel_user"]),
                             _OWN_ACCOUNT + f", or the Pi's login user '{quiet['user']}'")
            # the Pi's VPS is checked even if the Pi's other keys are not (and its valid tunnels are cross-checked)
            vps = self.pi_vps(quiet.get("vps"), path, vps_names) if "vps" in quiet or "vps" not in raw else None
            if vps is not None and name_ok:
                self.routed += [(name, vps, t) for t in self.valid_tunnels]
            if values is None or tunnels is None or not name_ok or vps is None or login_taken:
                continue
            values.pop("vps")
            values["tunnels"] = tunnels
            result[name] = PiSpec(name=name, role="pi", vps=vps, **values)
        return result

    def pi_vps(self, vps: str | None, path: KeyPath, vps_names: list[str]) -> str | None:
        """The name of the Pi's VPS, or None if there is no good answer (reported unless there is no VPS)."""
        if vps is None:
            if len(vps_names) > 1:
                self.problem(path + ("vps",), "required key 'vps' is missing: there is more than one VPS",
                             "add 'vps: <name>' with one of " + ", ".join(vps_names))
            return vps_names[0] if len(vps_names) == 1 else None
        if vps not in vps_names:
            if vps_names:
                close = difflib.get_close_matches(vps, vps_names, n=1)
                self.problem(path + ("vps",), f"there is no VPS named '{vps}'",
                             f"did you mean '{close[0]}'?" if close else "use one of: " + ", ".join(vps_names))
            return None
        return vps

    def tunnels(self, pi: str, section: Any, pi_path: KeyPath) -> tuple[TunnelSpec, ...] | None:
        """The Pi's tunnels, or None if any is invalid."""
        self.valid_tunnels = []
        if not isinstance(section, dict):
            return ()  # absent, or not a mapping: that is reported with the Pi's other fields
        result = []
        for name, raw, path, name_ok in self.named(section, pi_path + ("tunnels",)):
            values = self.fields(raw, path, TUNNEL_FIELDS)
            kind_ok = self.check_kind(raw, path)
            if values is not None and kind_ok and name_ok:
                result.append(self.tunnel(pi, name, values))
        self.valid_tunnels = result
        return tuple(result) if len(result) == len(section) else None

    def check_kind(self, raw: Mapping[str, Any], path: KeyPath) -> bool:
        """Options of one tunnel type must not appear on the other."""
        ok = True
        if raw.get("type") == "ssh":
            for key in HTTP_ONLY_KEYS:
                if key in raw:
                    self.problem(path + (key,), f"'{key}' only applies to http tunnels",
                                 "remove it, or make this an http tunnel with 'type: http'", at_key=True)
                    ok = False
        elif raw.get("type") == "http" and raw.get("public") is True:
            self.problem(path + ("public",),
                         "an http tunnel cannot be public: nginx on the VPS proxies it from loopback",
                         "remove 'public: true' (nginx publishes it through server_name or path)")
            ok = False
        if raw.get("type") == "http" and raw.get("path") == "/" and raw.get("server_name") is None:
            self.problem(path + ("path",),
                         "path '/' is the VPS's default server's own catch-all (it answers 404 for unknown paths)",
                         "use a prefix such as /pi1/web/, or give the tunnel its own server_name")
            ok = False
        return ok

    def tunnel(self, pi: str, name: str, values: dict[str, Any]) -> TunnelSpec:
        kind = values.pop("type")
        if kind == "http" and values["server_name"] is None and values["path"] is None:
            values["path"] = f"/{pi}/{name}/"
        if values["local_port"] is None:
            values["local_port"] = DEFAULT_LOCAL_PORT[kind]
        return TunnelSpec(name=name, kind=kind, **values)

    # -- cross-checks --------------------------------------------------------

    def check_ports(self, vps: str, ports: Mapping[str, int], tunnels: list[tuple[str, TunnelSpec]]) -> None:
        """Each port on the VPS has one user; each http route one tunnel.

        `ports` holds the VPS's valid port, http_port and https_port; `tunnels` its Pis' valid tunnels."""
        users: dict[int, KeyPath] = {}
        for key in ("port", "http_port", "https_port"):
            if key not in ports:
                continue
            where = ("vps", vps, key)
            port = ports[key]
            if port in users:
                self.problem(where, f"port {port} is also the VPS's {users[port][-1]}{self.line(users[port])}",
                             "give port, http_port and https_port different values")
            users.setdefault(port, where)
        routes: dict[str, KeyPath] = {}  # path prefix in the default server -> tunnel
        names: dict[str, KeyPath] = {}  # server_name -> tunnel (nginx compares them without case)
        for pi, tunnel in tunnels:
            path: KeyPath = ("pis", pi, "tunnels", tunnel.name)
            port = tunnel.remote_port
            if port != _AUTO_PORT and port in users:
                other = users[port]
                self.problem(path + ("remote_port",),
                             f"port {port} on VPS '{vps}' is already used by {_dotted(other)}{self.line(other)}",
                             "choose a port nothing else uses, or write 'remote_port: auto'")
            elif port != _AUTO_PORT:
                users[port] = path + ("remote_port",)
            if tunnel.kind == "http" and tunnel.server_name is not None:
                name = tunnel.server_name.lower().rstrip(".")
                if name in names:
                    self.problem(path + ("server_name",),
                                 f"server_name {tunnel.server_name!r} on VPS '{vps}' is already used by "
                                 f"{_dotted(names[name])}{self.line(names[name])}: nginx would serve only one of them",
                                 "give each http tunnel its own server_name (or route by path)")
                names.setdefault(name, path + ("server_name",))
            elif tunnel.kind == "http" and tunnel.path is not None:
                if tunnel.path in routes:
                    self.problem(path + ("path",),
                                 f"path {tunnel.path!r} on VPS '{vps}' is already routed to "
                                 f"{_dotted(routes[tunnel.path])}{self.line(routes[tunnel.path])}",
                                 "give each http tunnel its own path or server_name")
                routes.setdefault(tunnel.path, path)

    # -- port allocation -----------------------------------------------------

    def allocate(self, vps: Mapping[str, VpsSpec], pis: dict[str, PiSpec],
                 recorded: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
        """Give every auto remote_port a port, in place in `pis`; returns the new lock file content."""
        allocations: dict[str, dict[str, int]] = {}
        for spec in vps.values():
            tunnels = [(pi, t) for pi in pis.values() if pi.vps == spec.name for t in pi.tunnels]
            explicit = {t.remote_port for _, t in tunnels if t.remote_port != _AUTO_PORT}
            wanted = [f"{pi.name}/{t.name}" for pi, t in tunnels if t.remote_port == _AUTO_PORT]
            ports, unplaced = allocate_ports(spec, explicit, wanted, recorded.get(spec.name, {}))
            for tunnel_id in unplaced:
                low, high = spec.port_range
                pi_name, tunnel_name = tunnel_id.split("/")
                self.problem(("pis", pi_name, "tunnels", tunnel_name, "remote_port"),
                             f"no free port left in VPS '{spec.name}' port_range {low}-{high}",
                             f"widen vps.{spec.name}.port_range, or give this tunnel an explicit remote_port")
            if ports:
                allocations[spec.name] = ports
        for name, pi in pis.items():
            given = allocations.get(pi.vps, {})
            pis[name] = replace(pi, tunnels=tuple(
                replace(t, remote_port=given.get(f"{name}/{t.name}", t.remote_port)) for t in pi.tunnels))
        return allocations


_OWN_ACCOUNT: Final = "use an account only pitunnel uses, such as 'pitunnel'"


def _image_login(user: str) -> str:
    return (f"'{user}' is the login account of common server and Raspberry Pi images: pitunnel would take it over "
            "(move its home) and delete it on teardown")


def _pub(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def _exposure(path: Path) -> str | None:
    """Who besides the owner (and root) can read or change `path`: its mode, and whether they can reach it
    (every folder above it searchable by them), as "other users" or "its group"; None if nobody."""
    real = path.resolve()
    mode = real.stat().st_mode
    others, group = bool(mode & (stat.S_IROTH | stat.S_IWOTH)), bool(mode & (stat.S_IRGRP | stat.S_IWGRP))
    for folder in real.parents:
        if not others and not group:
            break
        folder_mode = folder.stat().st_mode
        others = others and bool(folder_mode & stat.S_IXOTH)
        group = group and bool(folder_mode & stat.S_IXGRP)
    return "other users" if others else "its group" if group else None


def _check_secret(path: Path, kind: str) -> None:
    """Refuse a secret file that others can read or change, as ssh does for private keys; and a password file
    that is not one line of UTF-8 text (read here, never shown)."""
    who = _exposure(path)
    if who is not None:
        mode = stat.S_IMODE(path.resolve().stat().st_mode)
        raise Invalid(f"{_clip(str(path), 256)} holds a secret but {who} can read or change it (mode {mode:04o})",
                      f"chmod 600 {path}")
    if kind == "key":
        return  # paramiko reads it
    limit = MAX_SECRET_BYTES if kind == "password" else MAX_HTPASSWD_BYTES
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise Invalid(f"{_clip(str(path), 256)} is bigger than {limit} bytes",
                      "put only the password in it, on one line" if kind == "password" else "name an htpasswd file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"{_clip(str(path), 256)} is not UTF-8 text (byte {e.start + 1} is not)",
                      "save it as UTF-8 text" + (", the password on one line" if kind == "password" else "")) from None
    if kind == "password":
        password = text.rstrip("\n")
        if not password:
            raise Invalid(f"{_clip(str(path), 256)} is empty", "put the password in it, on one line")
        if "\n" in password or "\r" in password:
            raise Invalid(f"{_clip(str(path), 256)} holds more than one line (or a carriage return)",
                          "put only the password in it, on one line with a Unix line ending")


def allocate_ports(vps: VpsSpec, explicit: set[int], wanted: list[str],
                   recorded: Mapping[str, int]) -> tuple[dict[str, int], list[str]]:
    """Ports for the tunnel ids in `wanted`, keeping recorded ones that are still free and in range.

    New ones get the lowest free port in the VPS's port_range. Returns the
    ports (in `wanted` order) and the ids left without one.
    """
    low, high = vps.port_range
    taken = {vps.port, vps.http_port, vps.https_port, *explicit}
    kept: dict[str, int] = {}
    for tunnel_id in wanted:
        port = recorded.get(tunnel_id)
        if port is not None and low <= port <= high and port not in taken:
            kept[tunnel_id] = port
            taken.add(port)
    free = (port for port in range(low, high + 1) if port not in taken)
    ports: dict[str, int] = {}
    unplaced: list[str] = []
    for tunnel_id in wanted:
        port = kept.get(tunnel_id) or next(free, None)
        if port is None:
            unplaced.append(tunnel_id)
        else:
            ports[tunnel_id] = port
    return ports, unplaced


# ---------------------------------------------------------------------------
# Lock file


_LOCK_FIX: Final = "delete it to reallocate (tunnels with remote_port: auto may then get new ports)"
_LOCK_HEADER: Final = (
    "# Remote ports that pitunnel allocated for tunnels with 'remote_port: auto'.\n"
    "# Keep it with the inventory so the ports stay stable; delete it to reallocate.\n"
)


def _read_ports(file: Path) -> tuple[dict[str, dict[str, int]], list[Problem]]:
    """The recorded allocations {vps: {"pi/tunnel": port}}, or problems naming the lock file."""
    if not file.exists():
        return {}, []
    try:
        doc = yamlsrc.load_file(file)
    except OSError as e:
        return {}, [Problem(file, None, None, "", f"cannot read the port lock file: {e.strerror}", _LOCK_FIX)]
    except yamlsrc.YamlSyntaxError as e:
        return {}, [Problem(file, e.line, e.column, "", f"YAML syntax error: {e.message}", _LOCK_FIX)]
    except yamlsrc.YamlRefused as e:
        return {}, [Problem(file, e.line, e.column, "", e.message, _LOCK_FIX)]
    problems = [Problem(file, i.line, i.column, _dotted(i.path), i.message, _LOCK_FIX) for i in doc.issues]

    def bad(path: KeyPath, message: str) -> None:
        line, column = doc.locate(path) or (None, None)
        problems.append(Problem(file, line, column, _dotted(path), message, _LOCK_FIX))

    data = doc.data if doc.data is not None else {}
    result: dict[str, dict[str, int]] = {}
    if not isinstance(data, dict):
        bad((), f"expected a mapping of VPS names, got {_show(data)}")
        return {}, problems
    for vps, ports in data.items():
        if not isinstance(ports, dict):
            bad((vps,), f"expected a mapping of 'pi/tunnel' to port, got {_show(ports)}")
            continue
        result[vps] = {}
        for tunnel_id, port in ports.items():
            try:
                result[vps][tunnel_id] = _unprivileged_port(port)
            except Invalid as e:
                bad((vps, tunnel_id), e.message)
    return (result, []) if not problems else ({}, problems)


def _write_ports(file: Path, allocations: Mapping[str, Mapping[str, int]]) -> None:
    text = _LOCK_HEADER + yaml.safe_dump({k: dict(v) for k, v in allocations.items()},
                                         sort_keys=False, default_flow_style=False)
    temporary = file.with_name(file.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, file)


# ---------------------------------------------------------------------------
# Entry point


def load_inventory(path: Path | str, *, allocate: bool = True, save_allocations: bool = True) -> Inventory:
    """Read and check the inventory at `path`; raise InventoryError listing every problem.

    Auto remote ports are always allocated in memory; the lock file is
    rewritten only when the allocations changed, the inventory is valid,
    and both `allocate` and `save_allocations` are true.
    """
    file = Path(path)
    try:
        doc = yamlsrc.load_file(file)
    except OSError as e:
        raise InventoryError(file, [Problem(file, None, None, "", f"cannot read the inventory: {e.strerror}",
                                            "check the path, or start from inventory/example.yml")]) from None
    except yamlsrc.YamlSyntaxError as e:
        raise InventoryError(file, [Problem(file, e.line, e.column, "", f"YAML syntax error: {e.message}",
                                            "correct the YAML at that spot (indentation, a missing ':', "
                                            "an unclosed quote or bracket)")]) from None
    except yamlsrc.YamlRefused as e:
        raise InventoryError(file, [Problem(file, e.line, e.column, "", e.message, e.fix)]) from None
    reader = _Reader(file, doc)
    read = reader.read()
    lock = ports_file(file)
    recorded, lock_problems = _read_ports(lock)
    settings, vps, pis = read or (None, {}, {})
    allocations = reader.allocate(vps, pis, recorded)
    problems = list(dict.fromkeys(reader.problems + lock_problems))  # defaults can repeat a problem per host
    if problems or settings is None:
        problems.sort(key=lambda p: (p.file != file, p.line or 0, p.column or 0))
        raise InventoryError(file, problems)
    if allocate and save_allocations and allocations != recorded:
        _write_ports(lock, allocations)
    return Inventory(path=file, settings=settings, vps=MappingProxyType(vps), pis=MappingProxyType(pis))
