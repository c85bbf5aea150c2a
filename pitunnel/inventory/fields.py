"""The schema: for each part of the inventory, its keys with their check and default; and checking a mapping
against one of these tables.

A key whose spec field in model.py has a default takes it from there (MODEL), so that each default is written
once; the tables write only the defaults the specs do not hold.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pitunnel.yamlsrc import KeyPath

from . import values
from .errors import Invalid, Problems, clip
from .files import local_file
from .model import KEEPALIVE, VIA, AcmeSpec, PiSpec, StatusPageSpec, TunnelSpec, VpsSpec
from .values import AUTO, Check

REQUIRED: Final = object()
MODEL: Final = object()


@dataclass(frozen=True)
class Field:
    check: Check
    # used when the key is absent, as YAML would write it; REQUIRED if it must be given; MODEL: the default
    # written on the spec's field of the same name (model.py)
    default: object = None
    path: bool = False  # a local path: expand ~, resolve relative to the inventory's folder
    exists: bool = False  # ... and the file must exist
    example: str = ""  # shown in the fix for a missing required key
    secret: str = ""  # "password", "htpasswd" or "key": no other user may read it (and a password is one line)


_password_file = Field(values.text, None, path=True, exists=True, secret="password")
_private_key = Field(values.text, None, path=True, exists=True, secret="key")

SECTION_FIELDS: Final = {
    "settings": Field(values.mapping),
    "defaults": Field(values.mapping),
    "vps": Field(values.mapping),
    "pis": Field(values.mapping),
}
SETTINGS_FIELDS: Final = {
    "known_hosts": Field(values.text, "~/.ssh/known_hosts", path=True),
    "laptop_key": _private_key,  # absent: ~/.ssh/id_ed25519 if it exists
    "ssh_config": Field(values.text, None, path=True, exists=True),  # absent or 'none': none is read
    "verify_ca_file": Field(values.text, None, path=True, exists=True),  # absent: the system's CAs
}
_HOST_FIELDS: Final = {
    "address": Field(values.address, REQUIRED, example="<IP address or DNS name>"),
    "port": Field(values.port, 22),
    "key": _private_key,
    "password_file": _password_file,
    "sudo_password_file": _password_file,
    "host_key": Field(values.host_key),
    "connect_timeout": Field(values.seconds, 10.0),
}
DEFAULTS_KEYS: Final = ("port", "user", "key", "password_file", "sudo_password_file", "connect_timeout", "via")


def _defaults_from(spec: type[Any], table: dict[str, Field]) -> dict[str, Field]:
    """`table` with each MODEL default replaced by the default of `spec`'s field of that name, as YAML would
    write it (a tuple as a list)."""
    written = {spec_field.name: spec_field.default for spec_field in dataclasses.fields(spec)}
    result: dict[str, Field] = {}
    for key, entry in table.items():
        if entry.default is MODEL:
            default = written[key]
            assert default is not dataclasses.MISSING, f"{spec.__name__}.{key} has no default"
            entry = replace(entry, default=list(default) if isinstance(default, tuple) else default)
        result[key] = entry
    return result


VPS_FIELDS: Final = _defaults_from(VpsSpec, {
    **_HOST_FIELDS,
    "user": Field(values.user, "root"),
    "tunnel_user": Field(values.tunnel_user, MODEL),
    "http_port": Field(values.port, MODEL),
    "https_port": Field(values.port, MODEL),
    "tls_certificate": Field(values.remote_path),
    "tls_key": Field(values.remote_path),
    "public_name": Field(values.server_name),
    "acme": Field(values.mapping),  # read with ACME_FIELDS
    "client_alive_interval": Field(values.at_least_one, None),  # absent: from its Pis' keepalive (the slowest)
    "client_alive_count_max": Field(values.at_least_one, None),
    "port_range": Field(values.port_range, MODEL),
    "metrics": Field(values.boolean, MODEL),
    "metrics_address": Field(values.listen_address, MODEL),
    "status_page": Field(values.mapping),  # read with STATUS_PAGE_FIELDS
    "firewall": Field(values.choice("auto", "leave"), MODEL),
})
PI_FIELDS: Final = _defaults_from(PiSpec, {
    **_HOST_FIELDS,
    "address": Field(values.address, None),  # absent: reached through its ssh tunnel only (an enrolled Pi)
    "user": Field(values.user, "pi"),
    "vps": Field(values.names),  # one name or a list; absent: the only VPS
    "same_port_everywhere": Field(values.boolean, MODEL),
    "tunnel_user": Field(values.tunnel_user, MODEL),
    "keepalive": Field(values.choice(*KEEPALIVE), MODEL),
    "server_alive_interval": Field(values.at_least_one, None),  # absent: from keepalive
    "server_alive_count_max": Field(values.at_least_one, None),
    "disable_password_login": Field(values.boolean, MODEL),
    "via": Field(values.choice(*VIA), MODEL),
    "tunnels": Field(values.mapping),  # read tunnel by tunnel; absent: none
})
TUNNEL_FIELDS: Final = _defaults_from(TunnelSpec, {
    "type": Field(values.choice("ssh", "http"), REQUIRED, example="ssh"),
    "local_port": Field(values.port),  # absent: DEFAULT_LOCAL_PORT of its type
    "remote_port": Field(values.remote_port, AUTO),
    "public": Field(values.boolean, False),
    "server_name": Field(values.server_name),
    "path": Field(values.url_path),
    "basic_auth_file": Field(values.text, None, path=True, exists=True, secret="htpasswd"),
    "websocket": Field(values.boolean, MODEL),
    "client_max_body_size": Field(values.nginx_size, MODEL),
    "hsts": Field(values.boolean, MODEL),
})
ACME_FIELDS: Final = _defaults_from(AcmeSpec, {
    "email": Field(values.email, REQUIRED, example="admin@example.com"),
    "directory": Field(values.https_url, MODEL),
    "staging": Field(values.boolean, MODEL),
    "ca_bundle": Field(values.text, None, path=True, exists=True),
})
STATUS_PAGE_FIELDS: Final = _defaults_from(StatusPageSpec, {
    "basic_auth_file": Field(values.text, REQUIRED, path=True, exists=True, secret="htpasswd",
                             example="status.htpasswd   # made with: htpasswd -cB status.htpasswd USER"),
    "path": Field(values.url_path, MODEL),
})
HTTP_ONLY_KEYS: Final = ("server_name", "path", "basic_auth_file", "websocket", "client_max_body_size", "hsts")
DEFAULT_LOCAL_PORT: Final = {"ssh": 22, "http": 80}


# ---------------------------------------------------------------------------
# Checking a mapping against a table

Inherited = Mapping[str, tuple[Any, KeyPath]]  # key -> (value, where it was written)


class FieldChecker:
    """Checks mappings of one inventory against the tables above, reporting every problem to `report`."""

    def __init__(self, report: Problems, base: Path) -> None:
        self.report = report
        self.base = base  # relative paths start here: the inventory's folder

    def check(self, raw: Mapping[str, Any], path: KeyPath, table: Mapping[str, Field],
              inherited: Inherited = MappingProxyType({})) -> dict[str, Any] | None:
        """Check `raw` against `table`: every field's value, or None if any was invalid."""
        self.unknown_keys(raw, path, table)
        found: dict[str, Any] = {}
        ok = True
        for key, spec in table.items():
            if key in raw:
                value, where = raw[key], path + (key,)
            elif key in inherited:
                value, where = inherited[key]
            elif spec.default is REQUIRED:
                self.report.problem(path + (key,), f"required key '{key}' is missing", f"add '{key}: {spec.example}'")
                ok = False
                continue
            else:
                value, where = spec.default, None
            try:
                found[key] = self.convert(key, value, spec)
            except Invalid as e:
                assert where is not None, f"default of {key} is invalid"
                self.report.problem(where, e.message, e.fix)
                ok = False
        return found if ok else None

    def quiet(self, raw: Mapping[str, Any], table: Mapping[str, Field], keys: Iterable[str],
              inherited: Inherited = MappingProxyType({})) -> dict[str, Any]:
        """The valid values among `keys`, as `check` finds them, reporting nothing (it did already)."""
        found: dict[str, Any] = {}
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
                found[key] = self.convert(key, value, spec)
            except Invalid:
                pass
        return found

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
        return local_file(value, self.base, exists=spec.exists, secret=spec.secret)

    def unknown_keys(self, raw: Mapping[str, Any], path: KeyPath, valid: Iterable[str]) -> None:
        valid = list(valid)
        for key in raw:
            if key not in valid:
                close = difflib.get_close_matches(key, valid, n=1)
                fix = f"did you mean '{close[0]}'?" if close else "remove it; valid keys here are " + ", ".join(valid)
                self.report.problem(path + (key,), f"unknown key '{clip(key)}'", fix, at_key=True)
