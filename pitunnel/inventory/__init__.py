"""The inventory: which VPS and Pis exist, how to reach them, which tunnels to build.

`load_inventory()` reads the YAML file, checks all of it before any host is
touched, and raises `InventoryError` listing every problem found, each with
file, line, key path, what is wrong and how to fix it. Remote ports written
as ``auto`` (or omitted) are allocated from the VPS's ``port_range`` and
remembered in a lock file next to the inventory (``hosts.yml`` ->
``hosts.ports.yml``) so they never move once given out.

The modules, one job each:
  model.py   the frozen specs the rest of pitunnel reads (and the defaults written on them)
  errors.py  problems: one line each naming file:line:column, key, what is wrong, the fix
  values.py  checks of one YAML value (a port, a user name, a host key, ...)
  fields.py  the schema: each section's keys with their check and default; checking a mapping against it
  files.py   the laptop files the inventory names: paths, and secrets kept private
  reader.py  the YAML document -> specs, section by section, collecting problems
  checks.py  checks across keys and hosts: accounts, each Pi's VPS, port and route clashes
  ports.py   ports for 'remote_port: auto' and the lock file that keeps them
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from pitunnel import yamlsrc

from . import ports, reader, revoked
from .checks import IMAGE_LOGINS
from .errors import Invalid, InventoryError, Problem, Problems
from .fields import (
    DEFAULT_LOCAL_PORT,
    DEFAULTS_KEYS,
    HTTP_ONLY_KEYS,
    PI_FIELDS,
    REQUIRED,
    SECTION_FIELDS,
    SETTINGS_FIELDS,
    TUNNEL_FIELDS,
    ACME_FIELDS,
    VPS_FIELDS,
    Field,
)
from .files import MAX_HTPASSWD_BYTES, MAX_SECRET_BYTES
from .model import DEFAULT_BODY_SIZE, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, AcmeSpec, Forward, HostSpec, acme_name, has_tls, Inventory, Listener, PiPath, PiSpec, Revoked, Settings, StatusPageSpec, TunnelSpec, VpsSpec
from .ports import allocate_ports, ports_file
from .values import AUTO, MAX_CONNECT_TIMEOUT, MAX_TEXT, NAME_RE, SSH_KEY_TYPES, SYSTEM_ACCOUNTS, USER_RE, Check

__all__ = [
    "ACME_FIELDS", "AcmeSpec", "LETS_ENCRYPT", "LETS_ENCRYPT_STAGING", "acme_name", "has_tls", "AUTO", "DEFAULTS_KEYS", "DEFAULT_BODY_SIZE", "DEFAULT_LOCAL_PORT", "HTTP_ONLY_KEYS", "IMAGE_LOGINS",
    "MAX_CONNECT_TIMEOUT", "MAX_HTPASSWD_BYTES", "MAX_SECRET_BYTES", "MAX_TEXT", "NAME_RE", "PI_FIELDS", "REQUIRED",
    "SECTION_FIELDS", "SETTINGS_FIELDS", "SSH_KEY_TYPES", "SYSTEM_ACCOUNTS", "TUNNEL_FIELDS", "USER_RE",
    "VPS_FIELDS", "Check", "Field", "HostSpec", "Invalid", "Inventory", "InventoryError", "PiPath", "PiSpec", "Problem",
    "Forward", "Listener", "Revoked", "Settings", "StatusPageSpec", "TunnelSpec", "VpsSpec", "allocate_ports", "load_inventory", "ports_file",
]


def load_inventory(path: Path | str, *, allocate: bool = True, save_allocations: bool = True,
                   reinstate: frozenset[str] = frozenset()) -> Inventory:
    """Read and check the inventory at `path`; raise InventoryError listing every problem.

    Auto remote ports are always allocated in memory; the lock file is
    rewritten only when the allocations changed, the inventory is valid,
    and both `allocate` and `save_allocations` are true. The Pis revoked
    (hosts.revoked.yml) are left out of `pis` (kept in `shut`), but for
    those in `reinstate` (being provisioned again); their ports stay reserved.
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
    report = Problems(file, doc)
    read = reader.read(report, file.resolve().parent)
    lock = ports_file(file)
    recorded, lock_problems = ports.read_ports(lock)
    records, revoked_problems = revoked.read_revoked(revoked.revoked_file(file))
    settings, vps, pis = read or (None, {}, {})
    retired = {n: r for n, r in records.items() if r.ended}
    records = {n: r for n, r in records.items() if not r.ended}
    reserved = {r.pi: r.reserved() for r in records.values() if r.pi not in pis}
    allocations = ports.allocate(report, vps, pis, recorded, reserved)
    problems = list(dict.fromkeys(report.problems + lock_problems + revoked_problems))  # defaults can repeat a problem per host
    if problems or settings is None:
        problems.sort(key=lambda p: (p.file != file, p.line or 0, p.column or 0))
        raise InventoryError(file, problems)
    saved = allocate and save_allocations and allocations != recorded
    if saved:
        ports.write_ports(lock, allocations)
    unrecorded = () if saved else tuple(sorted(f"{t}@{v}" for v, on in allocations.items() for t, port in on.items()
                                               if recorded.get(v, {}).get(t) != port))
    shut = {n: p for n, p in pis.items() if n in records and n not in reinstate}
    return Inventory(path=file, settings=settings, vps=MappingProxyType(vps),
                     pis=MappingProxyType({n: p for n, p in pis.items() if n not in shut}),
                     revoked=MappingProxyType(records), retired=MappingProxyType(retired), shut=MappingProxyType(shut),
                     order=tuple(pis), unrecorded=unrecorded)

