"""Remote ports for tunnels written 'remote_port: auto': given out from each VPS's port_range, and remembered in
a lock file next to the inventory (hosts.yml -> hosts.ports.yml) so they never move once given out."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Final

import yaml

from pitunnel import yamlsrc
from pitunnel.yamlsrc import KeyPath

from . import values
from .errors import Invalid, Problem, Report, show
from .model import AUTO_PORT, PiSpec, VpsSpec

_LOCK_FIX: Final = "delete it to reallocate (tunnels with remote_port: auto may then get new ports)"
_LOCK_HEADER: Final = (
    "# Remote ports that pitunnel allocated for tunnels with 'remote_port: auto'.\n"
    "# Keep it with the inventory so the ports stay stable; delete it to reallocate.\n"
)


def ports_file(inventory: Path) -> Path:
    """The lock file recording allocated ports: hosts.yml -> hosts.ports.yml."""
    return inventory.with_name(inventory.stem + ".ports.yml")


def allocate(report: Report, vps: Mapping[str, VpsSpec], pis: dict[str, PiSpec],
             recorded: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """Give every auto remote_port a port, in place in `pis`; returns the new lock file content."""
    allocations: dict[str, dict[str, int]] = {}
    for spec in vps.values():
        tunnels = [(pi, t) for pi in pis.values() if pi.vps == spec.name for t in pi.tunnels]
        explicit = {t.remote_port for _, t in tunnels if t.remote_port != AUTO_PORT}
        wanted = [f"{pi.name}/{t.name}" for pi, t in tunnels if t.remote_port == AUTO_PORT]
        ports, unplaced = allocate_ports(spec, explicit, wanted, recorded.get(spec.name, {}))
        for tunnel_id in unplaced:
            low, high = spec.port_range
            pi_name, tunnel_name = tunnel_id.split("/")
            report.problem(("pis", pi_name, "tunnels", tunnel_name, "remote_port"),
                           f"no free port left in VPS '{spec.name}' port_range {low}-{high}",
                           f"widen vps.{spec.name}.port_range, or give this tunnel an explicit remote_port")
        if ports:
            allocations[spec.name] = ports
    for name, pi in pis.items():
        given = allocations.get(pi.vps, {})
        pis[name] = replace(pi, tunnels=tuple(
            replace(t, remote_port=given.get(f"{name}/{t.name}", t.remote_port)) for t in pi.tunnels))
    return allocations


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


def read_ports(file: Path) -> tuple[dict[str, dict[str, int]], list[Problem]]:
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
    report = Report(file, doc)
    report.problems = [replace(problem, fix=_LOCK_FIX) for problem in report.problems]

    def bad(path: KeyPath, message: str) -> None:
        report.problem(path, message, _LOCK_FIX)

    data = doc.data if doc.data is not None else {}
    result: dict[str, dict[str, int]] = {}
    if not isinstance(data, dict):
        bad((), f"expected a mapping of VPS names, got {show(data)}")
        return {}, report.problems
    for vps, ports in data.items():
        if not isinstance(ports, dict):
            bad((vps,), f"expected a mapping of 'pi/tunnel' to port, got {show(ports)}")
            continue
        result[vps] = {}
        for tunnel_id, port in ports.items():
            try:
                result[vps][tunnel_id] = values.unprivileged_port(port)
            except Invalid as e:
                bad((vps, tunnel_id), e.message)
    return (result, []) if not report.problems else ({}, report.problems)


def write_ports(file: Path, allocations: Mapping[str, Mapping[str, int]]) -> None:
    text = _LOCK_HEADER + yaml.safe_dump({k: dict(v) for k, v in allocations.items()},
                                         sort_keys=False, default_flow_style=False)
    temporary = file.with_name(file.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, file)
