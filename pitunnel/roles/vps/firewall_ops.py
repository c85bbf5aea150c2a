"""The VPS's host firewall (`firewall:`): with `auto`, the ports pitunnel publishes opened in the firewall that
blocks them, in its own way and persistently, and recorded on the VPS; with `leave`, a warning per blocked port.

The op writes what pitunnel wants open to its record (STATE_DIR/firewall, one `PLACE PORT` a line); the guarded
handler "apply firewall" makes the firewall match it (firewall.sh.j2): a fresh login must work after it, or the
old record comes back and the handler runs again (the lock-out guard of sshd changes, pitunnel/guard.py).
A port the firewall already lets in is never recorded, so teardown keeps the user's own rule for it."""

from __future__ import annotations

import base64
import difflib
from dataclasses import dataclass
from typing import Any

from pitunnel.facts import Fact, Facts
from pitunnel.inventory import Inventory, VpsSpec
from pitunnel.ops import STATE_DIR, Handler, Op, Plan, backup_commands, q, write_file_commands
from pitunnel.remote import Remote
from pitunnel.roles.vps.firewall import FIREWALL, Block, HostFirewall, blocked, published, sections
from pitunnel.roles.vps.role import VPS_DEFAULTS, ROLE

RECORD = f"{STATE_DIR}/firewall"
APPLIED = f"{STATE_DIR}/firewall.applied"
HANDLER = "apply firewall"


@dataclass(frozen=True)
class Recorded:
    """pitunnel's firewall record on the VPS: what it wants open, and what the last run opened."""

    wanted: tuple[str, ...]
    applied: tuple[str, ...]


def _recorded(output: str) -> Recorded:
    part = sections(output)
    return Recorded(*(tuple(l.strip() for l in part.get(k, "").splitlines() if l.strip()) for k in ("record", "applied")))


RECORDS = Fact("firewall-record", f"echo @@record; cat {RECORD} 2>/dev/null; echo @@applied; cat {APPLIED} 2>/dev/null; true",
               _recorded)


def port_of(line: str) -> int:
    return int(line.split()[-1])


def apply_handler(remote: Remote) -> Handler:
    """The firewall as its record says, guarded: a fresh login from the laptop must work after it."""
    script = ROLE.render("firewall.sh.j2", record=q(RECORD), applied=q(APPLIED), tag="pitunnel",
                         nft_file=q(VPS_DEFAULTS["firewall_nft_file"]), nft_conf=q(VPS_DEFAULTS["firewall_nft_conf"]))
    blob = base64.b64encode(script.encode()).decode()
    return Handler(HANDLER, [f"printf %s {blob} | base64 -d | sh -e"], verify=remote.can_log_in_fresh,
                   verify_hint="a fresh login failed after the firewall change (it would lock you out)")


def _record_plan(now: Recorded, lines: list[str], reason: str) -> Plan:
    """Write the record (or remove it when empty), backed up for the guard, and say why."""
    text = "".join(f"{line}\n" for line in lines)
    diff = "".join(difflib.unified_diff([f"{l}\n" for l in now.wanted], text.splitlines(keepends=True),
                                        f"{RECORD} (now)", f"{RECORD} (wanted)"))
    write = (write_file_commands(RECORD, base64.b64encode(text.encode()).decode(), "root", "root", 0o600) if lines
             else [f"rm -f {q(RECORD)}"])
    return Plan([f"mkdir -p {STATE_DIR} && chmod 700 {STATE_DIR}", *backup_commands(RECORD), *write], reason, diff,
                [RECORD])


def _ports(lines: list[str], ports: dict[int, str]) -> str:
    return ", ".join(f"{port_of(l)}/tcp ({ports.get(port_of(l), 'no longer published')})" for l in lines)


def _blocking(blocks: dict[int, Block], ports: dict[int, str]) -> str:
    return "; ".join(f"{p}/tcp ({ports[p]}) blocked by {b}" for p, b in blocks.items())


@dataclass
class FirewallOpen(Op):
    """`firewall: auto`: every published port the host firewall blocks opened there, recorded as pitunnel's;
    `leave`: nothing changed, a warning per blocked port."""

    inv: Inventory
    vps: VpsSpec
    title: str = "host firewall: the ports pitunnel publishes"
    notify: tuple[str, ...] = (HANDLER,)

    def facts(self) -> list[Fact[Any]]:
        return [FIREWALL, RECORDS]

    def plan(self, facts: Facts) -> Plan:
        found: HostFirewall = facts.value(FIREWALL)
        now: Recorded = facts.value(RECORDS)
        ports = published(self.inv, self.vps)
        blocks = blocked(found, list(ports))
        which = ", ".join(found.active) or "no host firewall"
        if self.vps.firewall == "leave":
            if blocks:
                return Plan([], f"WARNING: left as it is (firewall: leave): {_blocking(blocks, ports)}; open "
                            "them, or set `firewall: auto`")
            return Plan([], f"left as it is (firewall: leave): {which}, blocks none of {_list(ports)}")
        # a port the user's own rule refuses (not a policy) stays refused: said, not overridden
        refused = {p: b for p, b in blocks.items() if not b.openable}
        blocks = {p: b for p, b in blocks.items() if b.openable}
        warning = f"WARNING: left as it is: {_blocking(refused, ports)}; open them yourself if they are meant to be " \
            "reached" if refused else ""
        kept = [l for l in now.wanted if port_of(l) in ports and port_of(l) not in blocks]
        lines = sorted({*kept, *(f"{b.place} {p}" for p, b in blocks.items())}, key=lambda l: (port_of(l), l))
        if tuple(lines) == now.wanted == now.applied and not blocks:
            opened = f"; pitunnel's own rules: {_ports(lines, ports)}" if lines else ""
            fine = f"{which}: blocks none of {_list(ports)}{opened}" if ports else f"{which}: nothing published"
            return Plan([], warning or fine)
        new = [l for l in lines if l not in now.applied or port_of(l) in blocks]
        gone = [l for l in now.applied if l not in lines]
        reason = "; ".join(filter(None, [f"open {_ports(new, ports)} in {_where(new)}" if new else "",
                                         f"close {_ports(gone, ports)} (pitunnel's rules)" if gone else ""]))
        return _record_plan(now, lines, "; ".join(filter(None, [reason or "record what pitunnel opened", warning])))


def _list(ports: dict[int, str]) -> str:
    return ", ".join(f"{p}/tcp" for p in ports) or "no port"


def _where(lines: list[str]) -> str:
    return ", ".join(dict.fromkeys(" ".join(l.split()[:-1]) for l in lines))


@dataclass
class FirewallClosed(Op):
    """Teardown: the rules pitunnel added taken out of the host firewall (nothing else of it)."""

    title: str = "host firewall: pitunnel's rules removed"
    notify: tuple[str, ...] = (HANDLER,)

    def facts(self) -> list[Fact[Any]]:
        return [RECORDS]

    def plan(self, facts: Facts) -> Plan:
        now: Recorded = facts.value(RECORDS)
        if not now.wanted and not now.applied:
            return Plan([], "pitunnel opened nothing there")
        return _record_plan(now, [], f"close {_ports(list(dict.fromkeys([*now.applied, *now.wanted])), {})}"
                            .replace(" (no longer published)", ""))
