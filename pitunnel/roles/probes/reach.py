"""Why the laptop cannot reach a port the VPS publishes: nothing listens there; the VPS's host firewall blocks it
(which firewall, which rule or policy); or neither, so a firewall outside the VPS drops it (the provider's)."""

from __future__ import annotations

import socket

from pitunnel.facts import LISTENERS, gather
from pitunnel.inventory import VpsSpec
from pitunnel.remote import Remote
from pitunnel.roles.vps.firewall import FIREWALL, HostFirewall

CONNECT_SECONDS = 5


def vps_view(remote: Remote) -> tuple[frozenset[str], HostFirewall]:
    """What listens on a VPS and its host firewall (one round trip)."""
    found = gather(remote, [LISTENERS, FIREWALL])
    return found.value(LISTENERS), found.value(FIREWALL)


def connects(address: str, port: int) -> str | None:
    """None if the laptop opens a TCP connection to address:port, else why not."""
    try:
        socket.create_connection((address, port), timeout=CONNECT_SECONDS).close()
        return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def unreachable(vps: VpsSpec, port: int, present: frozenset[str], firewall: HostFirewall | None) -> str | None:
    """None if the laptop reaches the VPS's `port`; else which of the three cases it is, as the check's hint."""
    failed = connects(vps.address, port)
    if failed is None:
        return None
    where = f"{vps.address}:{port} ({failed})"
    if not any(a.rpartition(":")[2] == str(port) for a in present):
        return f"{where}: nothing listens on port {port} of {vps.name}: is the tunnel (or Nginx) up?"
    block = firewall.blocks(port) if firewall is not None else None
    if block is not None:
        fix = ("rerun provision-vps (firewall: auto opens it)" if vps.firewall == "auto" and block.openable
               else f"open {port}/tcp in {block.firewall}")
        return f"{where}: {vps.name} listens, but its host firewall blocks it: {block}; {fix}"
    return (f"{where}: {vps.name} listens and no host firewall on it blocks port {port}, yet the laptop cannot "
            f"reach it: a firewall outside the VPS drops it (the provider's security group, security list or cloud "
            f"firewall): open {port}/tcp there")
