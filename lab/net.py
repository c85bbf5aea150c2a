"""The lab's networks on this machine: bridges, addresses, NAT and the firewall rules that make it a NAT.

Every rule lives in chains of our own (PT-LAB-*), jumped to from the built-in chains,
so teardown removes exactly what was added and nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path

from .plan import INET_BRIDGE, INTERNET, LAPTOP_ADDR, LabPlan, clashes
from .state import LabState
from .system import LabError, run

FWD_CHAIN = "PT-LAB-FWD"
NAT_CHAIN = "PT-LAB-NAT"
OUT_CHAIN = "PT-LAB-OUT"  # what this machine (the laptop) itself sends: faults.away_from_home blocks there
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def check_range_free(plan: LabPlan) -> None:
    routes = [(r.get("dst", ""), r.get("dev", "")) for r in json.loads(run(["ip", "-j", "route"]).stdout or "[]")]
    for link in json.loads(run(["ip", "-j", "addr"]).stdout or "[]"):
        for info in link.get("addr_info", []):
            if info.get("family") == "inet":
                routes.append((f"{info['local']}/{info['prefixlen']}", link.get("ifname", "")))
    found = clashes(plan, routes)
    if found:
        raise LabError(f"the lab's range 198.18.0.0/15 clashes with existing routes ({'; '.join(found)}): "
                       "remove them or run the lab on another machine")


def make_networks(plan: LabPlan, state: LabState) -> None:
    wanted = [(INET_BRIDGE, f"{LAPTOP_ADDR}/{INTERNET.prefixlen}")]
    wanted += [(home.bridge, f"{home.router}/{home.network.prefixlen}") for home in plan.homes]
    wanted += [(INET_BRIDGE, f"{home.public_address}/32") for home in plan.homes]
    for bridge in dict.fromkeys(b for b, _ in wanted):
        if bridge not in state.bridges:
            state.bridges.append(bridge)
            state.save()
            proc = run(["ip", "link", "add", bridge, "type", "bridge"], check=False)
            if proc.returncode != 0:
                raise LabError(f"cannot create bridge {bridge} ({proc.stderr.strip()}): "
                               "the kernel needs bridge support (modprobe bridge)")
            run(["ip", "link", "set", bridge, "up"])
    for bridge, cidr in wanted:
        if [cidr, bridge] not in state.addresses:
            state.addresses.append([cidr, bridge])
            state.save()
            run(["ip", "addr", "add", cidr, "dev", bridge])
    if state.ip_forward_before is None:
        state.ip_forward_before = IP_FORWARD.read_text().strip()
        state.save()
    IP_FORWARD.write_text("1\n")
    _firewall(plan, state)


def _firewall(plan: LabPlan, state: LabState) -> None:
    state.firewall = True
    state.save()
    _remove_firewall()
    ipt = ["iptables", "-w", "5"]
    run([*ipt, "-N", FWD_CHAIN])
    run([*ipt, "-t", "nat", "-N", NAT_CHAIN])
    rules = [
        # a home reaches the internet; the internet reaches a home only in reply (the NAT property)
        ["-i", "pt-home+", "-o", INET_BRIDGE, "-j", "ACCEPT"],
        ["-i", INET_BRIDGE, "-o", "pt-home+", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
        # nothing else crosses between lab segments, and no lab host leaves the lab
        ["-i", "pt-+", "-j", "DROP"],
        ["-o", "pt-+", "-j", "DROP"],
    ]
    for rule in rules:
        run([*ipt, "-A", FWD_CHAIN, *rule])
    for home in plan.homes:
        run([*ipt, "-t", "nat", "-A", NAT_CHAIN, "-s", str(home.network), "-o", INET_BRIDGE,
             "-j", "SNAT", "--to-source", str(home.public_address)])
    run([*ipt, "-I", "FORWARD", "1", "-j", FWD_CHAIN])
    run([*ipt, "-t", "nat", "-I", "POSTROUTING", "1", "-j", NAT_CHAIN])


def _remove_firewall() -> None:
    ipt = ["iptables", "-w", "5"]
    for table, builtin, chain in (("filter", "FORWARD", FWD_CHAIN), ("nat", "POSTROUTING", NAT_CHAIN),
                                  ("filter", "OUTPUT", OUT_CHAIN)):
        while run([*ipt, "-t", table, "-D", builtin, "-j", chain], check=False).returncode == 0:
            pass
        run([*ipt, "-t", table, "-F", chain], check=False)
        run([*ipt, "-t", table, "-X", chain], check=False)


def laptop_chain() -> str:
    """The chain for rules on what this machine sends, made (and jumped to from OUTPUT) if not yet there;
    _remove_firewall removes it with the lab's other chains."""
    ipt = ["iptables", "-w", "5"]
    if run([*ipt, "-S", OUT_CHAIN], check=False).returncode != 0:
        run([*ipt, "-N", OUT_CHAIN])
    if run([*ipt, "-C", "OUTPUT", "-j", OUT_CHAIN], check=False).returncode != 0:
        run([*ipt, "-I", "OUTPUT", "1", "-j", OUT_CHAIN])
    return OUT_CHAIN


def remove_networks(state: LabState) -> None:
    if state.firewall:
        _remove_firewall()
        state.firewall = False
    for bridge in reversed(state.bridges):
        run(["ip", "link", "del", bridge], check=False)
    state.bridges.clear()
    state.addresses.clear()
    if state.ip_forward_before is not None:
        IP_FORWARD.write_text(state.ip_forward_before + "\n")
        state.ip_forward_before = None
    state.save()


def leftovers() -> list[str]:
    """Anything of the lab's still on this machine: links and chains named like ours."""
    found = []
    for link in json.loads(run(["ip", "-j", "link"]).stdout or "[]"):
        name = link.get("ifname", "")
        if name.startswith(("pt-", "vb-")):
            found.append(f"link {name}")
    for table, chain in (("filter", FWD_CHAIN), ("nat", NAT_CHAIN), ("filter", OUT_CHAIN)):
        if run(["iptables", "-w", "5", "-t", table, "-S", chain], check=False).returncode == 0:
            found.append(f"iptables chain {table}/{chain}")
    return found
