"""The host-firewall op's plans in detail (issue 26, measured by issue 23's mutation run): the record it writes and
how, the words of each message (auto, leave, a rerun, a record from another firewall, teardown), and the handler's
paths and hint."""

from __future__ import annotations

import base64
from pathlib import Path

from pitunnel.roles.vps.firewall_ops import RECORD, FirewallClosed, FirewallOpen, apply_handler
from pitunnel.roles.vps.steps import handlers
from tests.unit.fake_hosts import FakeHost, load
from tests.unit.test_firewall import FIREWALLD, IPTABLES, LAB, NFT, NONE_YET, UFW, facts

NOTHING = NONE_YET + "@@iptables\n@@persistent\n"
OPENED = FIREWALLD.replace("ports: 12345/tcp 8000-8010/tcp", "ports: 12345/tcp 80/tcp 20022/tcp")  # pitunnel's ports
WHY = "zone public (target default: rejects what no service or port of the zone allows)"
QUIET = """
vps:
  main: {{address: 203.0.113.10, user: root{extra}}}
pis:
  alpha:
    address: 192.168.1.20
    tunnels:
      hidden: {{type: ssh, remote_port: 20023, local_port: 2222}}
"""


def record_written(commands: list[str]) -> str:
    """The record's text as the plan's commands write it (the base64 blob they decode)."""
    blob = next(c.split()[2] for c in commands if c.startswith("printf %s ") and c.endswith("| base64 -d > new"))
    return base64.b64decode(blob).decode()


def test_auto_writes_the_record_root_only_and_backed_up(tmp_path: Path) -> None:
    inv = load(tmp_path, LAB.format(extra=""))
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(FIREWALLD))
    assert plan.reason == "open 80/tcp (http routes), 20022/tcp (alpha's ssh tunnel ssh) in firewalld public"
    assert record_written(plan.commands) == "firewalld public 80\nfirewalld public 20022\n"
    assert "chown -h root:root new && chmod 600 new" in plan.commands and f"rm -f {RECORD}" not in plan.commands
    assert plan.commands[0] == "mkdir -p /var/lib/pitunnel-state && chmod 700 /var/lib/pitunnel-state"
    assert plan.diff.startswith(f"--- {RECORD} (now)\n+++ {RECORD} (wanted)\n")


def test_a_rerun_names_pitunnels_own_rules(tmp_path: Path) -> None:
    inv = load(tmp_path, LAB.format(extra=""))
    lines = "firewalld public 80\nfirewalld public 20022\n"
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(OPENED, lines, lines))
    assert plan.commands == [] and plan.reason == (
        "firewalld running (zone public): blocks none of 80/tcp, 20022/tcp; pitunnel's own rules: 80/tcp (http routes), "
        "20022/tcp (alpha's ssh tunnel ssh)")
    users = FirewallOpen(inv, inv.vps["main"]).plan(facts(OPENED))  # the user's own rules: nothing of pitunnel's
    assert users.commands == [] and users.reason == "firewalld running (zone public): blocks none of 80/tcp, 20022/tcp"


def test_nothing_published_and_no_firewall(tmp_path: Path) -> None:
    inv = load(tmp_path, QUIET.format(extra=""))
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(NOTHING))
    assert plan.commands == [] and plan.reason == "no host firewall: nothing published"
    inv = load(tmp_path, QUIET.format(extra=", firewall: leave"))
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(NOTHING))
    assert plan.commands == [] and plan.reason == "left as it is (firewall: leave): no host firewall, blocks none of no port"


def test_leave_names_the_firewall_or_every_blocked_port(tmp_path: Path) -> None:
    inv = load(tmp_path, LAB.format(extra=", firewall: leave"))
    fine = FirewallOpen(inv, inv.vps["main"]).plan(facts(NOTHING))
    assert fine.commands == [] and fine.reason == "left as it is (firewall: leave): no host firewall, blocks none of " \
        "80/tcp, 20022/tcp"
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(FIREWALLD))
    assert plan.commands == [] and plan.reason == (
        f"WARNING: left as it is (firewall: leave): 80/tcp (http routes) blocked by firewalld: {WHY}; 20022/tcp "
        f"(alpha's ssh tunnel ssh) blocked by firewalld: {WHY}; open them, or set `firewall: auto`")


def test_a_refused_port_is_warned_about_in_full(tmp_path: Path) -> None:
    inv = load(tmp_path, LAB.format(extra="").replace("remote_port: 20022", "remote_port: 8080"))
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(UFW))
    assert plan.commands == [] and plan.reason == (
        "WARNING: left as it is: 8080/tcp (alpha's ssh tunnel ssh) blocked by ufw: rule 8080/tcp DENY IN Anywhere; "
        "open them yourself if they are meant to be reached")
    again = FirewallOpen(inv, inv.vps["main"]).plan(facts(IPTABLES.replace("-j ACCEPT\n-A INPUT -j REJECT", " -j ACCEPT\n"
                                                                           "-A INPUT -p tcp --dport 8080 -j DROP\n"
                                                                           "-A INPUT -j REJECT")))
    opens = FirewallOpen(inv, inv.vps["main"]).plan(facts(UFW.replace("80/tcp                     ALLOW IN    Anywhere"
                                                                      "                   # pitunnel\n", "")))
    assert opens.reason == "open 80/tcp (http routes) in ufw; WARNING: left as it is: 8080/tcp (alpha's ssh tunnel ssh) " \
        "blocked by ufw: rule 8080/tcp DENY IN Anywhere; open them yourself if they are meant to be reached"
    assert "8080" in again.reason and "iptables 8080" in again.diff  # only ufw's own rule is the user's refusal


def test_a_port_opened_before_and_blocked_again_is_reopened(tmp_path: Path) -> None:
    """Someone deleted pitunnel's rule: the record and what was applied still agree, the firewall does not."""
    inv = load(tmp_path, LAB.format(extra=""))
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(IPTABLES, "iptables 20022\n", "iptables 20022\n"))
    assert plan.changes and plan.reason == "open 20022/tcp (alpha's ssh tunnel ssh) in iptables"


def test_a_recorded_port_not_applied_yet_is_opened(tmp_path: Path) -> None:
    """The last handler never ran (the record was written, nothing applied): the plan says it opens it."""
    inv = load(tmp_path, LAB.format(extra=""))
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(IPTABLES, "ufw 80\n", ""))
    assert plan.reason == "open 80/tcp (http routes), 20022/tcp (alpha's ssh tunnel ssh) in ufw, iptables"
    assert record_written(plan.commands) == "ufw 80\niptables 20022\n"


def test_a_port_reopened_and_one_closed_in_one_plan(tmp_path: Path) -> None:
    inv = load(tmp_path, LAB.format(extra=""))
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(IPTABLES, "iptables 20022\niptables 20099\n",
                                                         "iptables 20022\niptables 20099\n"))
    assert plan.reason == "open 20022/tcp (alpha's ssh tunnel ssh) in iptables; close 20099/tcp (no longer published) " \
        "(pitunnel's rules)"


def test_two_firewalls_are_both_named(tmp_path: Path) -> None:
    """An nftables ruleset of its own beside legacy iptables rules: the plan names both."""
    inv = load(tmp_path, LAB.format(extra=""))
    both = NFT.replace("@@iptables\n", "@@iptables\n*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p icmp -j ACCEPT\nCOMMIT\n")
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(both.replace("dport 12345 accept", "dport { 12345, 20022 } accept")))
    assert plan.commands == [] and plan.reason == "nftables table inet filter, iptables rules: blocks none of 80/tcp, 20022/tcp"


def test_a_stale_line_never_applied_is_dropped_from_the_record(tmp_path: Path) -> None:
    inv = load(tmp_path, LAB.format(extra=""))
    allowed = IPTABLES.replace("-A INPUT -j REJECT", "-A INPUT -p tcp --dport 20022 -j ACCEPT\n-A INPUT -j REJECT")
    plan = FirewallOpen(inv, inv.vps["main"]).plan(facts(allowed, "iptables 20022\niptables 20099\n", "iptables 20022\n"))
    assert plan.reason == "record what pitunnel opened" and record_written(plan.commands) == "iptables 20022\n"
    assert "-iptables 20099\n" in plan.diff


def test_teardown_closes_what_either_side_of_the_record_holds() -> None:
    nothing = FirewallClosed().plan(facts(""))
    assert nothing.commands == [] and nothing.reason == "pitunnel opened nothing there"
    for record, applied in (("ufw 80\n", ""), ("", "firewalld public 80\n")):
        plan = FirewallClosed().plan(facts("", record, applied))
        assert plan.reason == "close 80/tcp" and f"rm -f {RECORD}" in plan.commands and plan.backups == [RECORD]
    both = FirewallClosed().plan(facts("", "nftables inet filter input 443\nufw 80\n", "ufw 80\nufw 20022\n"))
    assert both.reason == "close 80/tcp, 20022/tcp, 443/tcp" and f"-nftables inet filter input 443\n" in both.diff


def test_the_handler_script_knows_the_nftables_files() -> None:
    handler = apply_handler(FakeHost("main"))  # type: ignore[arg-type]
    script = base64.b64decode(handler.commands[0].split()[2]).decode()
    assert "\nnft_file=/etc/pitunnel/nftables.nft\n" in script and "\nnft_conf=/etc/nftables.conf\n" in script
    assert handler.verify_hint == "a fresh login failed after the firewall change (it would lock you out)"
    assert {h.name: h for h in handlers(FakeHost("main"))}["apply firewall"].verify_hint == handler.verify_hint  # type: ignore[arg-type]
