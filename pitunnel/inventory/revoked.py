"""Revoked Pis, remembered next to the inventory (hosts.yml -> hosts.revoked.yml) by `pitunnel revoke`, so that
every later run honours them: their keys are never authorised again, their routes stay off, and their remote
ports stay reserved (never given to another Pi by 'remote_port: auto').

A revocation ends when its Pi is provisioned again with a new key made on it (provision-pi --limit PI: the
record stays, `ended`, so that its old keys stay refused), or when the Pi is gone from the inventory and
`pitunnel revoke PI --release-ports` forgets it and frees its ports."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from pitunnel.sshkeys import BadPublicKey, PublicKey, parse_public_key

from . import values
from .errors import Invalid, Problem, Problems, show
from .model import Inventory, Revoked
from .sidefile import read_side_file, write_side_file

_FIX: Final = ("it is written by `pitunnel revoke`: put back the copy you keep with the inventory (do not delete it "
               "while its Pis are out of your hands; docs/operations.md)")
_HEADER: Final = (
    "# Pis revoked by `pitunnel revoke` (docs/operations.md): their keys are never authorised again, their\n"
    "# routes stay off and their remote ports stay reserved. Keep it with the inventory; do not edit it.\n"
)


def revoked_file(inventory: Path) -> Path:
    """hosts.yml -> hosts.revoked.yml."""
    return inventory.with_name(inventory.stem + ".revoked.yml")


def read_revoked(file: Path) -> tuple[dict[str, Revoked], list[Problem]]:
    """The records {pi: Revoked}, or problems naming the file."""
    report, data, problems = read_side_file(file, "the revoked Pis", _FIX)
    if report is None or problems:
        return {}, problems
    data = data if data is not None else {}
    if not isinstance(data, dict):
        report.problem((), f"expected a mapping of Pi names, got {show(data)}", _FIX)
        return {}, report.problems
    found: dict[str, Revoked] = {}
    for pi, entry in data.items():
        record = _record(report, str(pi), entry)
        if record is not None:
            found[record.pi] = record
    return (found, []) if not report.problems else ({}, report.problems)


def _record(report: Problems, pi: str, entry: Any) -> Revoked | None:
    if not values.NAME_RE.fullmatch(pi) or not isinstance(entry, dict):
        report.problem((pi,), f"expected a Pi name and a mapping (since, keys, ports), got {show(entry)}", _FIX)
        return None
    since, keys, ports, ended = entry.get("since"), entry.get("keys") or [], entry.get("ports") or {}, entry.get("ended", "")
    if not isinstance(since, str) or not isinstance(ended, str) or set(entry) - {"since", "keys", "ports", "ended"}:
        report.problem((pi,), "expected the keys since (a time), keys, ports and ended (a time) only", _FIX)
        return None
    parsed = _keys(keys)
    if parsed is None:
        report.problem((pi, "keys"), "expected a list of public keys ('type base64')", _FIX)
        return None
    if not isinstance(ports, dict) or not all(isinstance(p, dict) for p in ports.values()):
        report.problem((pi, "ports"), "expected {VPS: {tunnel: port}}", _FIX)
        return None
    reserved: dict[str, dict[str, int]] = {}
    for vps, tunnels in ports.items():
        for tunnel, port in tunnels.items():
            try:
                reserved.setdefault(str(vps), {})[str(tunnel)] = values.unprivileged_port(port)
            except Invalid as e:
                report.problem((pi, "ports", vps, tunnel), e.message, _FIX)
    return Revoked(pi, since, parsed, reserved, ended)


def _keys(keys: Any) -> tuple[PublicKey, ...] | None:
    """The record's keys, parsed; None unless it is a list of public keys."""
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return None
    try:
        return tuple(parse_public_key(k) for k in keys)
    except BadPublicKey:
        return None


def write_revoked(file: Path, records: Mapping[str, Revoked]) -> None:
    """Write every record (atomically); no record: the file goes."""
    if not records:
        file.unlink(missing_ok=True)
        return
    doc = {r.pi: {"since": r.since, "keys": [k.line for k in r.keys], "ports": {v: dict(p) for v, p in r.ports.items()},
                  **({"ended": r.ended} if r.ended else {})} for r in records.values()}
    write_side_file(file, _HEADER, doc, width=1000)


def shut_out(inv: Inventory, record: Revoked) -> Inventory:
    """The inventory with this Pi revoked: out of `pis` (into `shut`), its record among the revoked."""
    pis = {n: p for n, p in inv.pis.items() if n != record.pi}
    shut = {**inv.shut, **({record.pi: inv.pis[record.pi]} if record.pi in inv.pis else {})}
    return replace(inv, pis=MappingProxyType(pis), shut=MappingProxyType(shut),
                   revoked=MappingProxyType({**inv.revoked, record.pi: record}),
                   retired=MappingProxyType({n: r for n, r in inv.retired.items() if n != record.pi}))


def revoked_key(inv: Inventory, key: PublicKey) -> bool:
    """Is this key one revoked from any Pi, ever (a revocation that ended leaves its keys refused)?"""
    return any(key in r.keys for r in records(inv).values())


def records(inv: Inventory) -> dict[str, Revoked]:
    """Every record of the file: the revocations in force, and those that ended."""
    return {**inv.retired, **inv.revoked}
