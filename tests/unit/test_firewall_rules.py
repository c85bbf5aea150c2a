"""Which firewall rule lets a new TCP connection from anywhere in, rule by rule (issue 26, measured by issue 23's
mutation run): each firewall's words for a port, a protocol, a state, an interface, an address, a jump; and what
pitunnel then says blocks the port, in the words the user reads."""

from __future__ import annotations

import pytest

from pitunnel.roles.vps.firewall import Chain, Firewalld, host_firewall, in_ports, parse_firewalld, parse_nft, sections
from tests.unit.test_firewall import NONE_YET

UFW_HEAD = """@@ufw
Status: active
Logging: on (low)
{default}
New profiles: skip

To                         Action      From
--                         ------      ----
"""


def ufw(rules: str, default: str = "Default: deny (incoming), allow (outgoing), disabled (routed)") -> str:
    return UFW_HEAD.format(default=default) + rules + "\n@@firewalld\n@@nft\n@@iptables\n@@persistent\n"


def nft(rules: str, policy: str = "drop", more: str = "") -> str:
    return NONE_YET + ("table inet filter {\n\tchain input {\n\t\ttype filter hook input priority filter; policy "
                       f"{policy};\n" + "".join(f"\t\t{r}\n" for r in rules.splitlines()) + "\t}\n" + more +
                       "}\n@@iptables\n@@persistent\n")


def iptables(rules: str, policy: str = "DROP", chains: str = "") -> str:
    return (NONE_YET + "@@iptables\n*filter\n" f":INPUT {policy} [0:0]\n:OUTPUT ACCEPT [0:0]\n{chains}" +
            "".join(f"-A INPUT {r}\n" for r in rules.splitlines()) + "COMMIT\n@@persistent\n")


def lets_in(fact_output: str, port: int) -> bool:
    return host_firewall(fact_output).blocks(port) is None


def test_a_range_holds_both_its_ends() -> None:
    assert in_ports(80, "80:100") and in_ports(100, "80:100") and in_ports(100, "80-100") and not in_ports(79, "80-100")


def test_ufw_rules_by_protocol_action_and_the_default() -> None:
    rules = ("8081/udp                   ALLOW IN    Anywhere\n"
             "8082                       ALLOW IN    Anywhere\n"
             "8083/tcp                   LIMIT IN    Anywhere\n"
             "8084/tcp                   REJECT IN   Anywhere\n"
             "8085/tcp                   ALLOW OUT   Anywhere\n")
    found = host_firewall(ufw(rules))
    assert not lets_in(ufw(rules), 8081) and lets_in(ufw(rules), 8082) and lets_in(ufw(rules), 8083)
    refused = found.blocks(8084)
    assert refused is not None and str(refused) == "ufw: rule 8084/tcp REJECT IN Anywhere"
    assert (refused.firewall, refused.place, refused.openable) == ("ufw", "ufw", False)
    assert str(found.blocks(8085)) == "ufw: default deny (incoming)"  # an outgoing rule lets nothing in
    policy = found.blocks(8081)
    assert policy is not None and policy.openable and policy.place == "ufw"
    assert lets_in(ufw("", "Default: allow (incoming), allow (outgoing), disabled (routed)"), 8081)
    assert str(host_firewall(ufw("", "Default: reject (incoming), allow (outgoing)")).blocks(1)) == \
        "ufw: default reject (incoming)"
    assert str(host_firewall(ufw("", "")).blocks(1)) == "ufw: default deny (incoming)"  # no Default line: ufw's own


def test_ufw_rules_without_the_direction() -> None:
    """`ufw status` without `verbose` writes the action alone."""
    rules = ("8081/tcp                   ALLOW       Anywhere\n"
             "8082/tcp                   DENY        Anywhere\n"
             "8083/tcp                   REJECT      Anywhere\n"
             "8084/tcp                   LIMIT       Anywhere\n")
    found = host_firewall(ufw(rules))
    assert found.blocks(8081) is None and found.blocks(8084) is None
    assert str(found.blocks(8082)) == "ufw: rule 8082/tcp DENY Anywhere"
    assert str(found.blocks(8083)) == "ufw: rule 8083/tcp REJECT Anywhere"


FIREWALLD = """@@ufw
@@firewalld
zone {zone}
{zone} (active)
  {target}
  services: ssh web
  ports: 8000-8010/tcp 9000/udp
service ssh 22/tcp
service web 80/tcp 443/tcp
@@nft
@@iptables
@@persistent
"""


@pytest.mark.parametrize("target, words", [
    ("target: default", "target default: rejects"), ("target: %%REJECT%%", "target %%REJECT%%: rejects"),
    ("target: REJECT", "target REJECT: rejects"), ("target: DROP", "target DROP: drops"),
    ("", "target default: rejects"),  # no target line: firewalld's default
])
def test_firewalld_says_what_its_zone_does(target: str, words: str) -> None:
    found = host_firewall(FIREWALLD.format(zone="dmz", target=target))
    blocked = found.blocks(9000)  # open for udp only
    assert blocked is not None and (blocked.firewall, blocked.place) == ("firewalld", "firewalld dmz")
    assert str(blocked) == f"firewalld: zone dmz ({words} what no service or port of the zone allows)"
    assert found.blocks(443) is None and found.blocks(8010) is None and found.blocks(22) is None


def test_firewalld_zone_is_read_with_each_service_by_name_and_its_ports() -> None:
    found = parse_firewalld(sections(FIREWALLD.format(zone="dmz", target="target: DROP"))["firewalld"])
    assert found == Firewalld("dmz", "DROP", ("8000-8010/tcp", "9000/udp"),
                              (("ssh", ("22/tcp",)), ("web", ("80/tcp", "443/tcp"))))


@pytest.mark.parametrize("rule, port, lets", [
    ("tcp dport 80 accept", 80, True), ("tcp dport 80 accept", 81, False), ("tcp dport != 80 accept", 81, False),
    ("th dport { 80, 443 } accept", 443, True), ("tcp dport 80 accept # handle 7", 80, True),
    ("meta l4proto tcp th dport 80 accept", 80, True), ("meta l4proto udp th dport 80 accept", 80, False),
    ("ip protocol tcp accept", 80, True), ("meta l4proto { tcp, udp } accept", 80, True),
    ("ct state new tcp dport 80 accept", 80, True), ("ct state { new, untracked } accept", 80, True),
    ("ct state established,related accept", 80, False), ("ct state != invalid accept", 80, False),
    ('iif "lo" accept', 80, False), ('iifname "lo" accept', 80, False), ("iif lo accept", 80, False),
    ('iifname "eth0" accept', 80, True), ('iifname != "lo" accept', 80, True), ('iif != "eth0" accept', 80, False),
    ("ip saddr 192.0.2.7 accept", 80, False), ("udp dport 80 accept", 80, False), ("tcp dport", 80, False),
    ('tcp dport 80 counter comment "web" accept', 80, True), ("tcp dport 80 log accept", 80, True),
    ("tcp dport 80 notrack accept", 80, True), ("tcp dport 80 counter packets 3 bytes 180 accept", 80, True),
    ('tcp dport 80 log prefix "web: " level info accept', 80, True), ("tcp dport 80", 80, False),
    ("tcp sport 80 accept", 80, False), ('iif "eth0" accept', 80, True), ('tcp dport 80 iifname "eth0" accept', 80, True), ("ct state new meta l4proto tcp accept", 80, True),
    ("meta l4proto tcp ct state new accept", 80, True), ("ip protocol udp ct state new accept", 80, False),
])
def test_nftables_rule_by_rule(rule: str, port: int, lets: bool) -> None:
    """One rule before a drop policy: does it let a new TCP connection from anywhere to `port` in?"""
    assert lets_in(nft(rule), port) == lets


@pytest.mark.parametrize("rule", ["tcp dport 80 drop", "tcp dport 80 reject with tcp reset", "tcp dport 80 counter drop",
                                  "tcp dport 80 counter packets 0 bytes 0 drop"])
def test_nftables_a_drop_or_reject_rule_is_named(rule: str) -> None:
    blocked = host_firewall(nft(rule, policy="accept")).blocks(80)
    assert blocked is not None and (blocked.firewall, blocked.place) == ("nftables", "nftables inet filter input")
    assert str(blocked) == f"nftables: table inet filter, chain input: rule '{rule}'"
    assert lets_in(nft(rule, policy="accept"), 81)


WEB = "\tchain web {\n\t\ttcp dport 443 return\n\t\ttcp dport 80 accept\n\t}\n"
REST = "\tchain rest {\n\t\ttcp dport 443 return\n\t\taccept\n\t}\n"  # all but 443


def test_nftables_jumps_returns_and_gotos() -> None:
    """A chain jumped to that ends or returns: back to the rule after the jump; a goto: the base chain's policy."""
    assert lets_in(nft("jump web", more=WEB), 80)
    assert not lets_in(nft("jump web\ntcp dport 8080 accept", more=WEB), 443)  # returned, then the policy
    assert lets_in(nft("jump web\ntcp dport 443 accept", more=WEB), 443)  # returned, then the next rule
    assert lets_in(nft("jump rest", more=REST), 80) and not lets_in(nft("jump rest", more=REST), 443)
    assert lets_in(nft("jump web\ntcp dport 22 accept", more=WEB), 22)  # the chain ended, then the next rule
    assert not lets_in(nft("goto web\ntcp dport 22 accept", more=WEB), 22)  # no way back from a goto
    policy = host_firewall(nft("goto web\ntcp dport 22 accept", more=WEB)).blocks(22)
    assert str(policy) == "nftables: table inet filter, chain input: policy drop of chain input"
    loop = "\tchain a {\n\t\tjump b\n\t}\n\tchain b {\n\t\tjump a\n\t}\n"
    assert not lets_in(nft("jump a\n", more=loop), 80) and lets_in(nft("jump a\n", "accept", loop), 80)


@pytest.mark.parametrize("rule", ["tcp dport 80 counter packets 0 bytes 0", "tcp dport 80 ct state new",
                                  'tcp dport 80 log prefix "web: " flags tcp sequence,options'])
def test_nftables_a_rule_that_only_counts_logs_or_matches_passes_on_to_the_next(rule: str) -> None:
    """A rule with no verdict (nft lists `log flags tcp sequence,options` as it was written): the next rule decides."""
    assert lets_in(nft(f"{rule}\ntcp dport 80 accept"), 80) and not lets_in(nft(rule), 80)
    blocked = host_firewall(nft(f"{rule}\ntcp dport 80 drop", policy="accept")).blocks(80)
    assert str(blocked) == "nftables: table inet filter, chain input: rule 'tcp dport 80 drop'"


def test_nftables_comment_lines_are_no_rules_of_their_chain() -> None:
    """`nft list ruleset` writes comments of its own (`# Warning: table ip filter is managed by iptables-nft`):
    a chain's rules are its rule lines alone."""
    text = ("table inet filter {\n\t# Warning: managed by iptables-nft, do not touch!\n\tchain input {\n"
            "\t\ttype filter hook input priority filter; policy drop;\n\t\t# tcp dport 80 accept\n"
            "\t\ttcp dport 22 accept\n\t}\n}\n")
    (table,) = parse_nft(text)
    assert table.chains == (Chain("input", "drop", ("tcp dport 22 accept",)),) and table.inputs == ("input",)


def test_nftables_tables_and_chains_that_do_not_filter_input() -> None:
    forward = NONE_YET + ("table inet filter {\n\tchain forward {\n\t\ttype filter hook forward priority filter; "
                          "policy drop;\n\t}\n}\n@@iptables\n@@persistent\n")
    found = host_firewall(forward)
    assert found.active == [] and found.blocks(80) is None
    default = nft("").replace(" policy drop;", "")  # no policy written: accept
    assert host_firewall(default).active == ["nftables table inet filter"] and lets_in(default, 80)


@pytest.mark.parametrize("rule, port, lets", [
    ("-p tcp --dport 80 -j ACCEPT", 80, True), ("-p tcp --dport 80 -j ACCEPT", 81, False),
    ("-p 6 -m multiport --dports 80,443 -j ACCEPT", 443, True), ("-p all -j ACCEPT", 80, True),
    ("--protocol tcp --destination-port 80 -j ACCEPT", 80, True), ("-p udp --dport 80 -j ACCEPT", 80, False),
    ("-p tcp -m multiport --destination-ports 79:81 -j ACCEPT", 80, True),
    ("-m conntrack --ctstate NEW,ESTABLISHED -j ACCEPT", 80, True), ("-m state --state ESTABLISHED -j ACCEPT", 80, False),
    ("-i lo -j ACCEPT", 80, False), ("--in-interface lo -j ACCEPT", 80, False), ("-i eth0 -j ACCEPT", 80, True),
    ("-s 0.0.0.0/0 -d 0.0.0.0/0 -j ACCEPT", 80, True), ("-s 192.0.2.7/32 -j ACCEPT", 80, False),
    ("--source 192.0.2.7/32 -j ACCEPT", 80, False), ("--destination 203.0.113.10/32 -j ACCEPT", 80, False),
    ("! -i lo -j ACCEPT", 80, False), ("-p tcp --dport 80 -m comment --comment 'web server' -j ACCEPT", 80, True),
    ("-p tcp --dport 80 -m limit --limit 5/min -j ACCEPT", 80, False), ("-m comment --comment 'open", 80, False),
    ("-p tcp --dport 80 -j LOG", 80, False), ("-s ::/0 -p tcp --match tcp --dport 80 -j ACCEPT", 80, True),
    ("-p tcp --dport 80", 80, False), ("--in-interface eth0 -j ACCEPT", 80, True),
    ("--source 0.0.0.0/0 --destination ::/0 -j ACCEPT", 80, True),
])
def test_iptables_rule_by_rule(rule: str, port: int, lets: bool) -> None:
    assert lets_in(iptables(rule), port) == lets


def test_iptables_drop_rules_policies_and_chains_of_the_users() -> None:
    found = host_firewall(iptables("-p tcp --dport 80 -j DROP", policy="ACCEPT"))
    blocked = found.blocks(80)
    assert blocked is not None and (blocked.firewall, blocked.place) == ("iptables", "iptables")
    assert str(blocked) == "iptables: rule '-p tcp --dport 80 -j DROP'" and found.blocks(81) is None
    assert found.active == ["iptables rules"]
    assert str(host_firewall(iptables("", "REJECT")).blocks(80)) == "iptables: policy REJECT of chain INPUT"
    assert str(host_firewall(iptables("")).blocks(80)) == "iptables: policy DROP of chain INPUT"
    assert host_firewall(iptables("", "ACCEPT")).active == []  # nothing filtered
    saved = host_firewall(iptables("-p tcp --dport 80 -j REJECT --reject-with tcp-reset").replace("@@persistent\n",
                                                                                                 "@@persistent\ninstalled\n"))
    assert saved.active == ["iptables rules (saved by netfilter-persistent)"]
    assert str(saved.blocks(80)) == "iptables: rule '-p tcp --dport 80 -j REJECT --reject-with tcp-reset' (saved in " \
        "/etc/iptables/rules.v4)"
    web = ":web - [0:0]\n-A web -p tcp --dport 443 -j RETURN\n-A web -j ACCEPT\n"
    assert lets_in(iptables("-j web", chains=web), 80) and not lets_in(iptables("-j web", chains=web), 443)
    assert lets_in(iptables("-j web\n-p tcp --dport 443 -j ACCEPT", chains=web), 443)
    drops = ":drops - [0:0]\n-A drops -p tcp --dport 443 -j DROP\n"
    assert lets_in(iptables("-j drops\n-p tcp --dport 22 -j ACCEPT", chains=drops), 22)  # the chain ended: next rule
    assert not lets_in(iptables("-g drops\n-p tcp --dport 22 -j ACCEPT", chains=drops), 22)  # no way back from a goto
    logged = iptables("-p tcp --dport 80 -j LOG\n-p tcp --dport 80 -j ACCEPT")
    assert lets_in(logged, 80)  # LOG goes on to the next rule


def test_iptables_a_log_rule_ending_in_a_flag_of_its_own_passes_on_to_the_next() -> None:
    """iptables-save writes LOG's flags (`--log-uid`, `--log-tcp-options`) as options without a value."""
    for flag in ("--log-uid", "--log-tcp-options"):
        logged = iptables(f"-p tcp -m tcp --dport 80 -j LOG {flag}\n-p tcp -m tcp --dport 80 -j ACCEPT")
        assert lets_in(logged, 80) and not lets_in(logged, 81)


@pytest.mark.parametrize("chain", ["logdrop", "LOGDROP", "LOGGING", "LOG_AND_DROP"])
def test_iptables_a_users_chain_with_log_in_its_name_is_walked(chain: str) -> None:
    """Only the LOG target goes on to the next rule: a chain of the user's named `LOGDROP` is jumped to (its
    name was once cut to `DROP`, and port 80 called open while that chain drops it)."""
    logdrop = f':{chain} - [0:0]\n-A {chain} -j LOG --log-prefix "dropped: "\n-A {chain} -j DROP\n'
    found = host_firewall(iptables(f"-p tcp -m tcp --dport 80 -j {chain}", policy="ACCEPT", chains=logdrop))
    assert str(found.blocks(80)) == "iptables: rule '-j DROP'" and found.blocks(81) is None


def test_iptables_of_ufw_and_nft_tables_of_iptables_or_firewalld_are_not_counted_twice() -> None:
    ufw_inactive = ufw("").replace("Status: active", "Status: inactive").split("@@iptables")[0] + \
        "@@iptables\n*filter\n:INPUT DROP [0:0]\nCOMMIT\n@@persistent\n"
    assert host_firewall(ufw_inactive).active == ["iptables rules"]  # ufw off: its chains are iptables rules
    own = NONE_YET + ("table ip6 nat {\n\tchain INPUT {\n\t\ttype filter hook input priority 0; policy drop;\n\t}\n}\n"
                      "table inet firewalld_x {\n\tchain in {\n\t\ttype filter hook input priority 0; policy drop;\n\t}\n"
                      "}\n@@iptables\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n@@persistent\n")
    assert host_firewall(own).active == [] and lets_in(own, 80)
    alone = own.replace("@@iptables\n*filter\n:INPUT ACCEPT [0:0]\nCOMMIT\n", "@@iptables\n")  # no iptables: nft's own
    assert host_firewall(alone).active == ["nftables table ip6 nat"] and not lets_in(alone, 80)
