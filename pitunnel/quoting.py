"""Values quoted where they are rendered: one Jinja2 filter per language of the files pitunnel writes, registered
on every role's environment (pitunnel/role.py) and on the Ansible benchmark's (benchmarks/ansible/filter_plugins).

Each filter returns a value as it is when it holds only characters that mean nothing in that language, else
quoted by that language's rules. A value that cannot be quoted there (a control character anywhere, nginx's `$`,
a `"` or `\\` in an ssh config) raises Unquotable: the inventory's checks (inventory/values.py) refuse such values
long before, so this is a second wall, never a message a user reads.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from typing import Final

_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# characters that are plain in all four languages: such a value is written as it is
_PLAIN: Final = re.compile(r"[A-Za-z0-9_./:@+,~-]+")
_NGINX_PLAIN: Final = re.compile(r"[A-Za-z0-9_./:@+,~*-]+")  # '*': a wildcard server_name, an include's glob


class Unquotable(ValueError):
    """A value that the language of its file cannot hold."""


def _text(value: object, where: str) -> str:
    text = str(value)
    if _CONTROL.search(text):
        raise Unquotable(f"{text!r} holds a control character, which {where} cannot hold")
    return text


def _double_quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sh(value: object) -> str:
    """One word of a POSIX shell (sh, bash): single-quoted unless plain (shlex.quote)."""
    return shlex.quote(_text(value, "a script line"))


def ssh(value: object) -> str:
    """One argument in ssh_config(5) or sshd_config(5): double-quoted unless plain. OpenSSH before 8.7 knows no
    escapes inside quotes, so '"' and '\\' cannot be written; '=' and '#' are quoted (separators, comments)."""
    text = _text(value, "an ssh config")
    if '"' in text or "\\" in text or "$" in text or not text:
        raise Unquotable(f"{text!r} cannot be written in an ssh config (a quote, backslash, '$' or nothing)")
    return text if _PLAIN.fullmatch(text.replace("%", "")) else f'"{text}"'


def ssh_tokens(value: object) -> str:
    """An argument of an ssh_config key that expands %-tokens (HostName, IdentityFile, UserKnownHostsFile):
    '%' doubled, so fe80::1%eth0 stays itself (ssh would fail on the unknown token %e)."""
    return ssh(_text(value, "an ssh config").replace("%", "%%"))


def systemd(value: object) -> str:
    """A whole setting's value in a unit file (Description=, User=): '%' doubled (specifiers); the rest of the
    line is the value, so nothing else is quoted, and a value ending in '\\' (a continued line) is refused."""
    text = _text(value, "a unit file")
    if text != text.strip() or text.endswith("\\"):
        raise Unquotable(f"{text!r} cannot be a unit file setting (space at an end, or a trailing backslash)")
    return text.replace("%", "%%")


def systemd_word(value: object) -> str:
    """One word of a space-separated list in a unit file (ReadWritePaths=, Documentation=): '%' doubled,
    C-style double quotes unless plain."""
    text = _text(value, "a unit file").replace("%", "%%")
    return text if _PLAIN.fullmatch(text.replace("%", "")) else _double_quoted(text)


def systemd_exec(value: object) -> str:
    """One word of an Exec*= command line: as systemd_word, and '$' doubled (no variable is expanded)."""
    text = _text(value, "a unit file")
    if text == ";":
        raise Unquotable("';' alone separates commands on an Exec line")
    return systemd_word(text.replace("$", "$$")) if "$" in text else systemd_word(text)


def nginx(value: object) -> str:
    """One token of an Nginx config: double-quoted unless plain. Nginx has no escape for '$' (a variable in
    many directives, quoted or not), so it is refused."""
    text = _text(value, "an nginx config")
    if "$" in text or not text:
        raise Unquotable(f"{text!r} cannot be written in an nginx config ('$' starts a variable)")
    return text if _NGINX_PLAIN.fullmatch(text) else _double_quoted(text)


def nginx_string(value: object) -> str:
    """An Nginx string shown to people (a basic-auth realm): always double-quoted."""
    text = nginx(value)
    return text if text.startswith('"') else f'"{text}"'


def nginx_plain(value: object) -> str:
    """Part of an Nginx token (a host name inside a URL): only plain characters, never quoted."""
    text = _text(value, "an nginx config")
    if not _PLAIN.fullmatch(text):
        raise Unquotable(f"{text!r} cannot be part of an nginx token")
    return text


FILTERS: Final[dict[str, Callable[[object], str]]] = {
    "sh": sh, "ssh": ssh, "ssh_tokens": ssh_tokens, "systemd": systemd, "systemd_word": systemd_word,
    "systemd_exec": systemd_exec, "nginx": nginx, "nginx_string": nginx_string, "nginx_plain": nginx_plain,
}
