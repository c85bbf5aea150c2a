"""The VPS's host firewall, on real hosts (issue 26): ufw, firewalld, iptables rules saved by iptables-persistent,
and an nftables ruleset, each set up on the VPS as its user would (only the VPS's sshd let in) before pitunnel
runs. Each: provision opens exactly the published ports (a rerun changes nothing), verify passes, the tunnel is
reachable after the VPS reboots, and teardown leaves the firewall's rules as they were. verify's three messages
for a port the laptop cannot reach: nothing listens, the host firewall blocks it, a firewall outside the VPS.

One lab boot for the module; the variants run one after the other on the same VPS, each removed after its test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import lab
from pitunnel.play import Play
from pitunnel.roles.probes.report import PathReport
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.site import provision as provision_site
from pitunnel.roles.site import teardown as teardown_site
from tests.conftest import lab_up
from tests.lab.runs import in_host, play

pytestmark = pytest.mark.lab
SSHD = 12345  # the lab VPS's sshd (the seed's port); pi1's public ssh tunnel is 12346, its http route on 80
INSTALL = "set -e\napt-get update -q >/dev/null 2>&1\nDEBIAN_FRONTEND=noninteractive apt-get install -y -q " \
          "--no-install-recommends {} >/dev/null\n"
NFTABLES_CONF = f"""#!/usr/sbin/nft -f
flush ruleset
table inet filter {{
	chain input {{
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		iif "lo" accept
		tcp dport {SSHD} accept
	}}
}}
"""
# firewalld starts as it is installed, allowing only port 22: policy-rc.d holds it until the VPS's sshd port is
# added, as a user would. Installed without its recommends (ipset, iptables, python3-cap-ng) and with policy-rc.d
# holding the package's scripts, it started but firewall-cmd got no answer on D-Bus in the lab's container;
# with them, and dbus reloaded once policy-rc.d is gone, it answers (which of the two is needed: not isolated).
# name -> (set up as a user would, its rules as text (the live ones and the saved ones), remove it again)
VARIANTS = {
    "ufw": (INSTALL.format("ufw") + f"ufw allow {SSHD}/tcp >/dev/null\nufw --force enable >/dev/null\n",
            "ufw status verbose; cat /etc/ufw/user.rules /etc/ufw/user6.rules",
            "ufw --force disable >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get purge -y -q ufw >/dev/null; "
            "rm -rf /etc/ufw; for t in iptables ip6tables; do $t -P INPUT ACCEPT; $t -P OUTPUT ACCEPT; $t -P FORWARD ACCEPT; "
            "$t -F; $t -X; done"),
    "iptables": ("set -e\necho 'iptables-persistent iptables-persistent/autosave_v4 boolean false' | debconf-set-selections\n"
                 "echo 'iptables-persistent iptables-persistent/autosave_v6 boolean false' | debconf-set-selections\n"
                 + INSTALL.format("iptables iptables-persistent").removeprefix("set -e\n") +
                 "iptables -A INPUT -m state --state RELATED,ESTABLISHED -j ACCEPT\niptables -A INPUT -p icmp -j ACCEPT\n"
                 f"iptables -A INPUT -i lo -j ACCEPT\niptables -A INPUT -p tcp -m state --state NEW -m tcp --dport {SSHD} -j ACCEPT\n"
                 "iptables -A INPUT -j REJECT --reject-with icmp-host-prohibited\nnetfilter-persistent save 2>/dev/null\n",
                 r"iptables -S; grep -v '^#' /etc/iptables/rules.v4 | sed 's/\[[0-9]*:[0-9]*\]//'",
                 "iptables -F; iptables -X; DEBIAN_FRONTEND=noninteractive apt-get purge -y -q iptables-persistent "
                 "netfilter-persistent >/dev/null; rm -rf /etc/iptables"),
    "firewalld": ("set -e\nprintf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d\n"
                  + INSTALL.format("firewalld ipset iptables python3-cap-ng").removeprefix("set -e\n") + "rm -f /usr/sbin/policy-rc.d\nsystemctl reload dbus\n"
                  f"firewall-offline-cmd --zone=public --add-port={SSHD}/tcp >/dev/null\n"
                  "systemctl enable firewalld >/dev/null 2>&1\nsystemctl restart firewalld\n"
                  "for i in $(seq 60); do firewall-cmd --state >/dev/null 2>&1 && break; sleep 1; done\nfirewall-cmd --state\n",
                  "firewall-cmd --list-all; firewall-cmd --permanent --list-all; cat /etc/firewalld/zones/*.xml",
                  "systemctl disable --now firewalld >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get purge -y -q "
                  "firewalld >/dev/null; rm -rf /etc/firewalld /usr/sbin/policy-rc.d"),
    "nftables": (INSTALL.format("nftables") + f"cat > /etc/nftables.conf <<'EOF'\n{NFTABLES_CONF}EOF\n"
                 "systemctl enable nftables >/dev/null 2>&1\nsystemctl restart nftables\n",
                 "nft list ruleset; cat /etc/nftables.conf; ls /etc/pitunnel 2>&1",
                 "systemctl disable --now nftables >/dev/null 2>&1; nft flush ruleset; "
                 "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q nftables >/dev/null"),
}


@pytest.fixture(scope="module")
def inventories(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The lab's inventory (firewall: auto, the default) and the same with `firewall: leave`."""
    base = lab_up(1).inventory
    doc = yaml.safe_load(base.read_text())
    doc["vps"]["vps"]["firewall"] = "leave"
    leave = tmp_path_factory.mktemp("firewall") / "leave.yml"
    leave.write_text(yaml.safe_dump(doc))
    return {"auto": base, "leave": leave}


def verified(inventory: Path) -> list[PathReport]:
    reports: list[PathReport] = []
    play(inventory, lambda p: reports.extend(verify(p)), quiet=True)
    return reports


def failing(reports: list[PathReport]) -> dict[str, str]:
    """check name -> its detail and hint, for each check that failed."""
    return {c.name: f"{c.detail} | {c.hint}" for r in reports for c in r.checks if not c.passed}


def firewall_step(p: Play | None) -> tuple[str, str]:
    assert p is not None
    found = [s for s in p.reporter.recaps["vps"].steps if s.title.startswith("host firewall")]
    assert len(found) == 1, found
    return found[0].status, found[0].reason


def provisioned(inventory: Path) -> tuple[str, str]:
    code, p = play(inventory, provision_site)
    assert code == 0, {h: (r.changed, r.failed) for h, r in p.reporter.recaps.items()} if p else code
    return firewall_step(p)


DIAGNOSE = "systemctl --failed --no-legend; ss -Htln; nft list ruleset 2>&1 | head -60; iptables -S 2>&1 | head -30; " \
    "journalctl -b --no-pager -u nftables -u firewalld -u ufw -u netfilter-persistent 2>&1 | tail -20"


def rebooted() -> None:
    """The VPS reboots, and pi1 is reachable through it again (else what the VPS looks like)."""
    assert lab.inject("reboot-vps", "pi1", timeout=120) is not None, in_host("vps", DIAGNOSE)


def check_variant(name: str, inventories: dict[str, Path]) -> None:
    """Set the firewall up, provision, rerun, verify, reboot the VPS, tear down, compare its rules; removed after."""
    setup, dump, clean = VARIANTS[name]
    ran = lab.exec_in("vps", setup, check=False, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    try:
        before = in_host("vps", dump)
        status, reason = provisioned(inventories["auto"])
        assert status == "changed" and "12346/tcp" in reason and "80/tcp" in reason, reason
        assert f"{SSHD}/tcp" not in reason
        status, reason = provisioned(inventories["auto"])  # the rerun: nothing to open, and said so
        assert status == "ok" and "blocks none of 80/tcp, 12346/tcp" in reason, reason
        assert failing(verified(inventories["auto"])) == {}
        rebooted()
        assert failing(verified(inventories["auto"])) == {}
        code, _ = play(inventories["auto"], lambda p: teardown_site(p, purge=False))
        assert code == 0
        assert in_host("vps", dump) == before
        assert in_host("vps", "ls /var/lib/pitunnel-state/firewall* 2>/dev/null || echo none").strip() == "none"
    finally:
        lab.exec_in("vps", clean, check=False, timeout=300)


def test_ufw_leave_warns_and_verify_names_the_rule_then_auto_opens(inventories: dict[str, Path]) -> None:
    """Nothing provisioned: verify says nothing listens. ufw on, `firewall: leave`: provision warns per port and
    verify names ufw's policy; then `auto` does the whole round (check_variant)."""
    nothing = failing(verified(inventories["auto"]))
    assert "nothing listens on port 12346" in nothing["ssh: ssh lands on pi1"], nothing
    setup, _, clean = VARIANTS["ufw"]
    assert lab.exec_in("vps", setup, check=False, timeout=300).returncode == 0
    try:
        status, reason = provisioned(inventories["leave"])
        assert status == "ok" and reason.startswith("WARNING") and "12346/tcp" in reason, reason
        assert "ufw: default deny (incoming)" in reason
        blocked = failing(verified(inventories["leave"]))
        assert "host firewall blocks it: ufw: default deny (incoming)" in blocked["ssh: ssh lands on pi1"], blocked
        assert "ufw: default deny (incoming)" in blocked["api: http via nginx reaches pi1"], blocked
        code, _ = play(inventories["auto"], lambda p: teardown_site(p, purge=False))
        assert code == 0
    finally:
        lab.exec_in("vps", clean, check=False, timeout=300)
    check_variant("ufw", inventories)


def test_iptables_saved_by_iptables_persistent(inventories: dict[str, Path]) -> None:
    check_variant("iptables", inventories)


def test_firewalld(inventories: dict[str, Path]) -> None:
    check_variant("firewalld", inventories)


def test_nftables_ruleset_and_a_firewall_outside_the_vps(inventories: dict[str, Path]) -> None:
    """The nftables variant; before its teardown, a drop in front of the VPS (the provider's firewall): verify
    says the VPS listens, no host firewall blocks the port, and a firewall outside does."""
    setup, dump, clean = VARIANTS["nftables"]
    assert lab.exec_in("vps", setup, check=False, timeout=300).returncode == 0
    try:
        before = in_host("vps", dump)
        status, reason = provisioned(inventories["auto"])
        assert status == "changed" and "nftables inet filter input" in reason, reason
        assert 'include "/etc/pitunnel/nftables.nft"' in in_host("vps", "cat /etc/nftables.conf")
        with lab.port_dropped(12346):
            outside = failing(verified(inventories["auto"]))
        assert "a firewall outside the VPS drops it" in outside["ssh: ssh lands on pi1"], outside
        rebooted()
        assert failing(verified(inventories["auto"])) == {}
        code, _ = play(inventories["auto"], lambda p: teardown_site(p, purge=False))
        assert code == 0
        assert in_host("vps", dump) == before
    finally:
        lab.exec_in("vps", clean, check=False, timeout=300)
