"""Checks of one YAML value: each returns the value converted, or raises Invalid(what is wrong, how to fix it)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import math
import re
from collections.abc import Callable
from typing import Any, Final

import paramiko

from .errors import Invalid, clip, show
from .model import AUTO_PORT

Check = Callable[[Any], Any]

AUTO: Final = "auto"  # remote_port: give this tunnel a free port from the VPS's port_range
NAME_RE: Final = re.compile(r"[a-z][a-z0-9-]{0,30}")
USER_RE: Final = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"
_HOSTNAME_RE: Final = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_URL_PATH_RE: Final = re.compile(r"/(?:[A-Za-z0-9._~-]+/)*")
# printable ASCII but space ; { } ' " \\ $ ` and the glob characters * ? [ ]
_REMOTE_PATH_RE: Final = re.compile(r"/[A-Za-z0-9/._+,:@%~#()!&|<>=^-]*")
# an IPv6 zone id (fe80::1%eth0) names a network interface: Linux allows 1-15 bytes without '/', ':' or spaces;
# lowercase, as the tunnel's ssh lowercases the whole host name (an interface ETH0 would become eth0); not all
# digits, which the resolver reads as an interface's number (and 0 as none at all)
_ZONE_RE: Final = re.compile(r"(?!\.\.?\Z)(?![0-9]+\Z)[a-z0-9_.-]{1,15}")
# control characters: a newline would start another line of a config file or a script, wherever the value lands
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NGINX_SIZE_RE: Final = re.compile(r"[0-9]{1,9}[kKmMgG]?")
SSH_KEY_TYPES: Final = (  # host key types paramiko can check (a host key is never a security-key sk-* type)
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa",
)
MAX_TEXT: Final = 4096  # characters in any text value (PATH_MAX is 4096 bytes; a host key is under 1000)
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


def integer(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    fix = "write a whole number without quotes"
    if isinstance(value, bool):
        fix += " (yes/no/on/off/true/false are booleans in YAML)"
    raise Invalid(f"expected a whole number, got {show(value)}", fix)


def int_in(low: int, high: int, noun: str) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        number = integer(value)
        if not low <= number <= high:
            raise Invalid(f"{number} is out of range", f"use a {noun} from {low} to {high}")
        return number
    return check


port = int_in(1, 65535, "port")
unprivileged_port = int_in(1024, 65535, "port")


def at_least_one(value: Any) -> int:
    number = integer(value)
    if number < 1:
        raise Invalid(f"{number} is too small", "use a whole number of 1 or more")
    return number


def seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"expected a number of seconds, got {show(value)}", "write a number such as 10")
    fix = f"use a number of seconds from 1 to {MAX_CONNECT_TIMEOUT}, such as 10"
    if not math.isfinite(value):
        raise Invalid(f"{value} is not a number of seconds", fix)
    if value <= 0:
        raise Invalid(f"{value} is not positive", fix)
    if not 1 <= value <= MAX_CONNECT_TIMEOUT:  # below 1, SSH's whole-second timeout would be 0: no wait at all
        raise Invalid(f"{value} is out of range", fix)
    return float(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {show(value)}", "write true or false without quotes")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid(f"expected text, got {show(value)}", "write it as text, in quotes if needed")
    if not value.strip():
        raise Invalid("is empty", "give a value, or remove the key")
    if len(value) > MAX_TEXT:
        raise Invalid(f"is {len(value)} characters long", f"use at most {MAX_TEXT} characters")
    control = _CONTROL_RE.search(value)
    if control:
        raise Invalid(f"{clip(value)!r} holds a control character ({control.group()!r}, character {control.start() + 1})",
                      "write the value on one line, without newlines, tabs or other control characters")
    return value


def mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid(f"expected a mapping, got {show(value)}", "write indented 'key: value' lines under it")
    return value


def choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise Invalid(f"{show(value)} is not allowed", "use one of: " + ", ".join(options))
        return str(value)
    return check


def name(value: Any) -> str:
    given = text(value)
    if not NAME_RE.fullmatch(given):
        raise Invalid(f"{clip(given)!r} is not a valid name", _name_fix(given))
    return given


def names(value: Any) -> tuple[str, ...]:
    """One name, or a list of different names (a Pi's VPSes): a tuple either way."""
    if not isinstance(value, list):
        return (name(value),)
    if not value:
        raise Invalid("the list is empty", "name at least one VPS, e.g. 'vps: main' or 'vps: [main, backup]'")
    found = tuple(name(item) for item in value)
    twice = sorted({n for n in found if found.count(n) > 1})
    if twice:
        raise Invalid(f"{', '.join(twice)} is listed more than once", "name each VPS once")
    return found


def _name_fix(given: str) -> str:
    fix = ("use 1-31 lowercase letters, digits or '-', starting with a letter "
           "(names become unix user, file and systemd unit names)")
    suggestion = re.sub(r"[^a-z0-9-]+", "-", given.lower()).lstrip("-0123456789")[:31].rstrip("-")
    return fix + (f", e.g. {suggestion!r}" if NAME_RE.fullmatch(suggestion) else "")


def _text_that(test: Callable[[str], object], what: str, fix: str) -> Callable[[Any], str]:
    """A check of text that passes `test`; "'<text>' is not <what>" otherwise."""
    def check(value: Any) -> str:
        given = text(value)
        if not test(given):
            raise Invalid(f"{clip(given)!r} is not {what}", fix)
        return given
    return check


user = _text_that(USER_RE.fullmatch, "a valid user name",
                  "use up to 32 lowercase letters, digits, '_' or '-', starting with a letter or '_'")


def tunnel_user(value: Any) -> str:
    account = user(value)
    if account == "root":
        raise Invalid("the tunnel must not run as root", "use an unprivileged account such as 'pitunnel'")
    if account in SYSTEM_ACCOUNTS or account.startswith(_SYSTEM_ACCOUNT_PREFIXES):
        raise Invalid(f"'{account}' is a system account: pitunnel would take it over (move its home) and delete it "
                      "on teardown", "use an account only pitunnel uses, such as 'pitunnel'")
    return account


def _is_hostname(given: str) -> bool:
    return (len(given) <= 253 and _HOSTNAME_RE.fullmatch(given) is not None
            and re.fullmatch(r"[0-9.]+", given) is None)  # all digits: a broken IPv4 address


def address(value: Any) -> str:
    given = text(value)
    try:
        ip = ipaddress.ip_address(given)
    except ValueError:
        if not _is_hostname(given):
            raise Invalid(f"{clip(given)!r} is not an IP address or host name",
                          "use an IPv4 or IPv6 address without brackets (203.0.113.10, 2001:db8::1) "
                          "or a DNS name (vps.example.com)") from None
        return given
    zone = ip.scope_id if isinstance(ip, ipaddress.IPv6Address) else None
    if zone is not None and not _ZONE_RE.fullmatch(zone):
        raise Invalid(f"the zone id {clip(zone)!r} of {clip(given)!r} is not a network interface name",
                      "write the interface after '%' as 'ip link' shows it: 1-15 lowercase letters, digits, '.', '_' or '-' "
                      "(ssh lowercases the host name), not a number, "
                      "e.g. fe80::1%eth0")
    return given


server_name = _text_that(lambda given: _is_hostname(given.removeprefix("*.")), "a valid server name",
                         "use one host name such as pi1.example.com or *.example.com")
_location = _text_that(_URL_PATH_RE.fullmatch, "a valid location path",
                       "start and end with '/' and use only letters, digits, '.', '_', '~' and '-' "
                       "between slashes, e.g. /pi1/web/")


def url_path(value: Any) -> str:
    given = _location(value)
    if {".", ".."} & set(given.split("/")):
        raise Invalid(f"{clip(given)!r} has a '.' or '..' segment: nginx resolves those in every request path, so "
                      "this location would never match (or would be another one)",
                      "write the path without '.' and '..' segments, e.g. /pi1/web/")
    return given


def nginx_size(value: Any) -> str:
    given = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else ""
    if not _NGINX_SIZE_RE.fullmatch(given):
        raise Invalid(f"{show(value)} is not an nginx size",
                      "write a number of bytes with an optional k, m or g suffix, e.g. 10m (0: no limit)")
    return given


remote_path = _text_that(_REMOTE_PATH_RE.fullmatch, "an absolute path of plain ASCII characters",
                         "use an absolute path on the VPS of ASCII letters, digits and / . _ - + , : @ % ~ # ( ) ! & | < > = ^, "
                         "e.g. /etc/letsencrypt/live/vps.example.com/fullchain.pem")


def host_key(value: Any) -> str:
    given = text(value)
    fix = "paste the host's public key as '<type> <base64>', e.g. the contents of /etc/ssh/ssh_host_ed25519_key.pub"
    parts = given.split()
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        raise Invalid("is not an SSH public key", fix)
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):  # ValueError: a non-ASCII character
        raise Invalid("the key's base64 part is malformed", fix) from None
    length = int.from_bytes(blob[:4], "big")
    if blob[4:4 + length] != parts[0].encode():
        raise Invalid(f"the key's base64 part is not a {parts[0]} key (truncated or mixed up?)", fix)
    try:  # the same parser that will check the host's key: a key it cannot read must not get that far
        paramiko.PKey.from_type_string(parts[0], blob)
    except Exception as e:
        raise Invalid(f"the key's base64 part is not a whole {parts[0]} key ({clip(str(e) or type(e).__name__)})",
                      fix) from None
    return f"{parts[0]} {parts[1]}"  # without the comment


def remote_port(value: Any) -> int:
    if value == AUTO:
        return AUTO_PORT
    if isinstance(value, str):
        raise Invalid(f"{show(value)} is not a port", "use a port from 1024 to 65535, or auto")
    try:
        return unprivileged_port(value)
    except Invalid as e:
        raise Invalid(e.message, "use a port from 1024 to 65535 (sshd cannot bind lower ports for the "
                                 "unprivileged tunnel account), or auto") from None


def port_range(value: Any) -> tuple[int, int]:
    fix = "write [low, high] with 1024 <= low <= high <= 65535, e.g. [20000, 29999]"
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(f"expected a list of two ports, got {show(value)}", fix)
    try:
        low, high = (unprivileged_port(v) for v in value)
    except Invalid as e:
        raise Invalid(e.message, fix) from None
    if low > high:
        raise Invalid(f"low end {low} is above high end {high}", fix)
    return low, high


# RFC 5322's atext (ASCII), less ' $ ` (which no CA's form takes either), then a DNS name
_EMAIL_RE: Final = re.compile(r"[A-Za-z0-9!#%&*+/=?^_{|}~.-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
email = _text_that(_EMAIL_RE.fullmatch, "an e-mail address",
                   "write the address the CA may write to about your certificates, in ASCII, e.g. admin@example.com")
_HTTPS_URL_RE: Final = re.compile(r"https://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9._~/%-]*)?")
https_url = _text_that(_HTTPS_URL_RE.fullmatch, "an https:// URL",
                       "write the ACME directory URL, e.g. https://acme-v02.api.letsencrypt.org/directory")


def listen_address(value: Any) -> str:
    """`IPv4:port` for a service to listen on (a literal address: what it binds is what it says)."""
    given = text(value)
    fix = "write an IPv4 address and a port, e.g. 127.0.0.1:9100 (loopback: only the VPS itself reads it)"
    host, _, port = given.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        raise Invalid(f"{show(given)} is not an IPv4 address with a port", fix) from None
    if re.fullmatch(r"[0-9]{1,5}", port) is None or not 1 <= int(port) <= 65535:  # ASCII: isdigit() takes '²' 
        raise Invalid(f"{show(given)} has no valid port", fix)
    return given
