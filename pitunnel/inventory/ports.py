"""Remote ports for tunnels written 'remote_port: auto': given out from each VPS's port_range, and remembered in
a lock file next to the inventory (hosts.yml -> hosts.ports.yml) so they never move once given out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Final

from pitunnel.yamlsrc import KeyPath

from . import values
from .errors import Invalid, Problem, Problems, show
from .model import AUTO_PORT, PiSpec, VpsSpec
from .sidefile import read_side_file, write_side_file

_LOCK_FIX: Final = "delete it to reallocate (tunnels with remote_port: auto may then get new ports)"
_LOCK_HEADER: Final = (
    "# Remote ports that pitunnel allocated for tunnels with 'remote_port: auto'.\n"
    "# Keep it with the inventory so the ports stay stable; delete it to reallocate.\n"
)


def ports_file(inventory: Path) -> Path:
    """The lock file recording allocated ports: hosts.yml -> hosts.ports.yml."""
    return inventory.with_name(inventory.stem + ".ports.yml")


def allocate(report: Problems, vps: Mapping[str, VpsSpec], pis: dict[str, PiSpec],
             recorded: Mapping[str, Mapping[str, int]],
             reserved: Mapping[str, Mapping[str, Mapping[str, int]]] = {}) -> dict[str, dict[str, int]]:
    """Give every auto remote_port a port on each VPS of its Pi, in place in `pis`; returns the new lock file
    content. Each VPS gives out its own ports, except to a Pi with `same_port_everywhere`: its tunnels get a
    port free on every one of its VPSes (placed first, so it never takes another tunnel's recorded port).
    `reserved`: the ports of revoked Pis no longer in the inventory ({pi: {vps: {"pi/tunnel": port}}}): given to
    no tunnel, and kept in the lock file."""
    taken = {name: set(spec.own_ports) for name, spec in vps.items()}
    held = {(name, port): pi for pi, on in reserved.items() for name, ports in on.items() if name in vps
            for port in ports.values()}
    for pi in pis.values():
        for t in pi.tunnels:
            for name in pi.all_vps:
                if (name, t.remote_port) in held:
                    report.problem(("pis", pi.name, "tunnels", t.name, "remote_port"),
                                   f"port {t.remote_port} on VPS '{name}' is reserved for the revoked Pi "
                                   f"{held[name, t.remote_port]}",
                                   f"choose another port, or free it: remove {held[name, t.remote_port]} for good "
                                   f"with `pitunnel revoke {held[name, t.remote_port]} --release-ports`")
    for name, port in held:
        taken[name].add(port)
    for pi in pis.values():
        for name in pi.all_vps:
            if name in taken:  # a VPS whose own keys are wrong is reported already, and allocates nothing
                taken[name] |= {t.remote_port for t in pi.tunnels if t.remote_port != AUTO_PORT}
    allocations: dict[str, dict[str, int]] = {name: {} for name in vps}
    for pi in pis.values():
        if pi.same_port_everywhere and len(pi.all_vps) > 1:
            for t in pi.tunnels:
                if t.remote_port == AUTO_PORT:
                    _same_port(report, vps, pi, f"{pi.name}/{t.name}", taken, allocations, recorded)
    for spec in vps.values():
        wanted = [f"{pi.name}/{t.name}" for pi in pis.values() if spec.name in pi.all_vps
                  and not (pi.same_port_everywhere and len(pi.all_vps) > 1)
                  for t in pi.tunnels if t.remote_port == AUTO_PORT]
        ports, unplaced = allocate_ports(spec, taken[spec.name], wanted, recorded.get(spec.name, {}))
        for tunnel_id in unplaced:
            low, high = spec.port_range
            pi_name, tunnel_name = tunnel_id.split("/")
            report.problem(("pis", pi_name, "tunnels", tunnel_name, "remote_port"),
                           f"no free port left in VPS '{spec.name}' port_range {low}-{high}",
                           f"widen vps.{spec.name}.port_range, or give this tunnel an explicit remote_port")
        allocations[spec.name].update(ports)
    for name, pi in pis.items():
        tunnels = []
        for t in pi.tunnels:
            on = tuple((v, allocations.get(v, {}).get(f"{name}/{t.name}", t.remote_port)) for v in pi.all_vps)
            tunnels.append(replace(t, remote_port=on[0][1], ports=on))
        pis[name] = replace(pi, tunnels=tuple(tunnels))
    for kept in reserved.values():
        for vps_name, held_ports in kept.items():
            if vps_name in allocations:
                allocations[vps_name].update(held_ports)
    return {name: ports for name, ports in allocations.items() if ports}


def _same_port(report: Problems, vps: Mapping[str, VpsSpec], pi: PiSpec, tunnel_id: str, taken: dict[str, set[int]],
               allocations: dict[str, dict[str, int]], recorded: Mapping[str, Mapping[str, int]]) -> None:
    """One port for `tunnel_id` on every VPS of `pi`: the recorded one if all its VPSes agree and it is free on
    each, else the lowest free on all of them (and recorded for nothing else there); a problem naming every VPS
    where it clashes if there is none."""
    group = [vps[name] for name in pi.all_vps if name in vps]
    low, high = max(s.port_range[0] for s in group), min(s.port_range[1] for s in group)
    was = {recorded.get(s.name, {}).get(tunnel_id) for s in group}
    port = was.pop() if len(was) == 1 else None
    if port is None or not low <= port <= high or any(port in taken[s.name] for s in group):
        kept = {p for s in group for other, p in recorded.get(s.name, {}).items() if other != tunnel_id}
        port = next((p for p in range(low, high + 1)
                     if p not in kept and all(p not in taken[s.name] for s in group)), None)
    if port is None:
        pi_name, tunnel_name = tunnel_id.split("/")
        ranges = ", ".join(f"'{s.name}' {s.port_range[0]}-{s.port_range[1]}" for s in group)
        report.problem(("pis", pi_name, "tunnels", tunnel_name, "remote_port"),
                       f"same_port_everywhere: no port is free on every VPS of {pi_name} (port_range {ranges})",
                       "widen the VPSes' port_range so they overlap, give this tunnel an explicit remote_port, "
                       "or drop same_port_everywhere")
        return
    for s in group:
        taken[s.name].add(port)
        allocations[s.name][tunnel_id] = port


def allocate_ports(vps: VpsSpec, explicit: set[int], wanted: list[str],
                   recorded: Mapping[str, int]) -> tuple[dict[str, int], list[str]]:
    """Ports for the tunnel ids in `wanted`, keeping recorded ones that are still free and in range.

    New ones get the lowest free port in the VPS's port_range. Returns the
    ports (in `wanted` order) and the ids left without one.
    """
    low, high = vps.port_range
    taken = {*vps.own_ports, *explicit}
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
    report, data, problems = read_side_file(file, "the port lock file", _LOCK_FIX)
    if report is None or problems:
        return {}, problems

    def bad(path: KeyPath, message: str) -> None:
        report.problem(path, message, _LOCK_FIX)

    data = data if data is not None else {}
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
    write_side_file(file, _LOCK_HEADER, {k: dict(v) for k, v in allocations.items()})
