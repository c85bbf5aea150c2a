"""The VPS's host firewall, as a fact: which one is active (ufw, firewalld, an nftables ruleset, iptables
rules, netfilter-persistent), and for a port, whether a new TCP connection from anywhere would be blocked
and by what (the firewall and its rule or policy). Read only; firewall_ops.py opens what pitunnel publishes."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pitunnel.facts import Fact
from pitunnel.inventory import Inventory, VpsSpec
from pitunnel.inventory.model import metrics_port
from pitunnel.roles.vps.nginx import http_routes

# one section per firewall: what each says of itself (nothing if it is not installed or not running)
FIREWALL_SCRIPT = r"""echo @@ufw
if command -v ufw >/dev/null 2>&1; then LANG=C ufw status verbose 2>&1 || true; fi
echo @@firewalld
if command -v firewall-cmd >/dev/null 2>&1 && firewall-cmd --state >/dev/null 2>&1; then
  dev=$(ip route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
  z=$(firewall-cmd --get-zone-of-interface="${dev:-none}" 2>/dev/null) || z=$(firewall-cmd --get-default-zone)
  echo "zone $z"
  firewall-cmd --zone="$z" --list-all
  for s in $(firewall-cmd --zone="$z" --list-services); do
    echo "service $s $(firewall-cmd --info-service="$s" | sed -n 's/^ *ports: //p')"
  done
fi
echo @@nft
if command -v nft >/dev/null 2>&1; then nft list ruleset 2>/dev/null || true; fi
echo @@iptables
if command -v iptables-save >/dev/null 2>&1; then iptables-save -t filter 2>/dev/null || true; fi
echo @@persistent
dpkg-query -W -f '${db:Status-Status}\n' netfilter-persistent 2>/dev/null || true
"""
IPTABLES_TABLES = frozenset({"filter", "nat", "mangle", "raw", "security"})
# what follows `counter` or `log` in a rule as `nft list` writes it: `counter packets 3 bytes 180`, `log prefix "x"`
NFT_STATEMENT_OPTIONS = frozenset({"packets", "bytes", "prefix", "level", "flags", "group", "snaplen", "queue-threshold"})


@dataclass(frozen=True)
class Block:
    """What blocks a port: the firewall (`ufw`), its rule or policy in its own words, and where pitunnel
    would open the port in it (`ufw`; `firewalld ZONE`; `nftables FAMILY TABLE CHAIN`; `iptables`)."""

    firewall: str
    rule: str
    place: str
    openable: bool = True  # False: the user's own rule refuses it (ufw), which pitunnel does not override

    def __str__(self) -> str:
        return f"{self.firewall}: {self.rule}"


def in_ports(port: int, spec: str) -> bool:
    """Does a port list (`80`, `80,443`, `8000:8100`, `8000-8100`, `{ 22, 80 }`) hold `port`?"""
    for part in re.split(r"[,\s{}]+", spec):
        low, _, high = part.replace("-", ":").partition(":")
        if low.isdigit() and (int(low) == port if not high else high.isdigit() and int(low) <= port <= int(high)):
            return True
    return False


# ------------------------------------------------------------------ ufw
@dataclass(frozen=True)
class UfwRule:
    to: str
    action: str
    source: str
    comment: str


@dataclass(frozen=True)
class Ufw:
    active: bool
    incoming: str  # the default policy for incoming: deny, reject, allow
    rules: tuple[UfwRule, ...]

    def blocks(self, port: int) -> Block | None:
        if not self.active:
            return None
        for r in self.rules:
            proto_ok = not r.to.partition("/")[2] or r.to.endswith("/tcp")
            if r.source == "Anywhere" and proto_ok and in_ports(port, r.to.partition("/")[0]):
                if r.action.startswith(("ALLOW", "LIMIT")):
                    return None
                return Block("ufw", f"rule {r.to} {r.action} {r.source}", "ufw", openable=False)
        if self.incoming == "allow":
            return None
        return Block("ufw", f"default {self.incoming} (incoming)", "ufw")


def parse_ufw(text: str) -> Ufw | None:
    if "Status:" not in text:
        return None
    active = "Status: active" in text
    incoming = re.search(r"Default: (\w+) \(incoming\)", text)
    rules, table = [], False
    for line in text.splitlines():
        if line.startswith("--"):
            table = True
            continue
        if not table or not line.strip() or "(v6)" in line:
            continue
        body, _, comment = line.partition("#")
        cols = re.split(r"\s{2,}", body.strip())
        if len(cols) >= 3 and cols[1].split()[-1] in ("IN", "ALLOW", "DENY", "REJECT", "LIMIT"):
            rules.append(UfwRule(cols[0], cols[1], cols[2], comment.strip()))
    return Ufw(active, incoming.group(1) if incoming else "deny", tuple(rules))


# ------------------------------------------------------------------ firewalld
@dataclass(frozen=True)
class Firewalld:
    zone: str
    target: str
    ports: tuple[str, ...]  # `80/tcp`, `8000-8100/tcp`
    services: tuple[tuple[str, tuple[str, ...]], ...]  # name, its ports

    def blocks(self, port: int) -> Block | None:
        if self.target.upper() == "ACCEPT":
            return None
        opened = [*(("port", p) for p in self.ports), *((f"service {n}", p) for n, ps in self.services for p in ps)]
        if any(p.endswith("/tcp") and in_ports(port, p[:-4]) for _, p in opened):
            return None
        what = "rejects" if self.target in ("default", "%%REJECT%%", "REJECT") else self.target.lower() + "s"
        return Block("firewalld", f"zone {self.zone} (target {self.target}: {what} what no service or port "
                     "of the zone allows)", f"firewalld {self.zone}")


def parse_firewalld(text: str) -> Firewalld | None:
    zone = re.search(r"^zone (\S+)", text, re.M)
    if zone is None:
        return None

    def field(name: str) -> str:
        found = re.search(rf"^\s+{name}: ?(.*)$", text, re.M)
        return found.group(1).strip() if found else ""

    services = tuple((m.group(1), tuple(m.group(2).split())) for m in re.finditer(r"^service (\S+) ?(.*)$", text, re.M))
    return Firewalld(zone.group(1), field("target") or "default", tuple(field("ports").split()), services)


# ------------------------------------------------------------------ nftables and iptables: rules walked in order
@dataclass(frozen=True)
class Chain:
    name: str
    policy: str  # accept / drop (nft), ACCEPT / DROP (iptables), "" for a chain of its own (no hook)
    rules: tuple[str, ...]


Decide = Callable[[str, int], "tuple[bool, str]"]  # rule, port -> (matches a new TCP connection from anywhere, verdict)


def walk(chains: dict[str, Chain], start: str, port: int, decide: Decide, depth: int = 0) -> str | None:
    """The verdict of `start` for a new TCP connection to `port` from anywhere: `accept`, `drop: RULE`, or
    None when the chain ends (its policy then decides, if it has one)."""
    chain = chains.get(start)
    if chain is None or depth > 8:
        return None
    for rule in chain.rules:
        matches, verdict = decide(rule, port)
        if not matches or not verdict:
            continue
        word = verdict.split()[0].lower()
        if word in ("accept",):
            return "accept"
        if word in ("drop", "reject"):
            return f"drop: rule '{rule}'"
        if word == "return":
            return None
        target = verdict.split()[-1]
        found = walk(chains, target, port, decide, depth + 1)
        if found is not None or word == "goto":
            return found
    return None


def _nft_tokens(rule: str) -> list[str]:
    return re.findall(r'\{[^}]*\}|"[^"]*"|\S+', rule.split(" # handle ")[0])


def nft_decide(rule: str, port: int) -> tuple[bool, str]:
    tokens, i, verdict = _nft_tokens(rule), 0, ""
    while i < len(tokens):
        t, rest = tokens[i], tokens[i + 1:]
        if t in ("accept", "drop", "reject", "return"):
            verdict, i = t, len(tokens)
        elif t in ("jump", "goto") and rest:
            verdict, i = f"{t} {rest[0]}", len(tokens)
        elif t in ("counter", "log", "notrack"):
            i += 1
            while i + 1 < len(tokens) and tokens[i] in NFT_STATEMENT_OPTIONS:
                i += 2
        elif t == "comment" and rest:
            i += 2
        elif t in ("tcp", "th") and len(rest) >= 2 and rest[0] == "dport":
            if rest[1] == "!=" or not in_ports(port, rest[1]):
                return False, ""
            i += 3
        elif t in ("meta", "ip") and len(rest) >= 2 and rest[0] in ("l4proto", "protocol"):
            if "tcp" not in rest[1]:
                return False, ""
            i += 3
        elif t == "ct" and len(rest) >= 2 and rest[0] == "state":
            if rest[1] == "!=" or "new" not in re.split(r"[,\s{}]+", rest[1]):
                return False, ""
            i += 3
        elif t in ("iif", "iifname") and rest:
            negated = rest[0] == "!="
            name = (rest[1] if negated and len(rest) > 1 else rest[0]).strip('"')
            if (name == "lo") != negated:
                return False, ""
            i += 3 if negated else 2
        else:
            return False, ""  # anything else (a source address, udp, icmp, a limit): not a connection from anywhere
    return True, verdict


def iptables_decide(rule: str, port: int) -> tuple[bool, str]:
    try:
        tokens, i, verdict = shlex.split(rule), 0, ""
    except ValueError:
        return False, ""
    while i < len(tokens):
        t, value = tokens[i], tokens[i + 1] if i + 1 < len(tokens) else ""
        if t == "!":
            return False, ""
        if t in ("-j", "-g"):
            verdict = value if t == "-j" else f"goto {value}"
        elif t in ("-p", "--protocol"):
            if value not in ("tcp", "all", "6"):
                return False, ""
        elif t in ("--dport", "--destination-port", "--dports", "--destination-ports"):
            if not in_ports(port, value):
                return False, ""
        elif t in ("--state", "--ctstate"):
            if "NEW" not in value.split(","):
                return False, ""
        elif t in ("-i", "--in-interface"):
            if value == "lo":
                return False, ""
        elif t in ("-s", "-d", "--source", "--destination"):
            if value not in ("0.0.0.0/0", "::/0"):
                return False, ""
        elif t not in ("-m", "--match", "--reject-with", "--comment"):
            return False, ""
        i += 2
    if verdict and verdict.split()[-1] not in ("ACCEPT", "DROP", "REJECT", "RETURN", "LOG") and not verdict.startswith("goto"):
        verdict = f"jump {verdict}"
    return True, "" if verdict == "LOG" else verdict  # LOG goes on to the next rule; a chain `LOGDROP` is walked


@dataclass(frozen=True)
class NftTable:
    family: str
    name: str
    chains: tuple[Chain, ...]
    inputs: tuple[str, ...]  # its base chains on the input hook


def parse_nft(text: str) -> tuple[NftTable, ...]:
    tables: list[NftTable] = []
    family = name = chain = policy = ""
    chains: list[Chain] = []
    rules: list[str] = []
    inputs: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        head = re.match(r"table (\w+) (\S+) \{", line)
        if head:
            family, name, chains, inputs = head.group(1), head.group(2), [], []
        elif re.match(r"chain (\S+) \{", line):
            chain, policy, rules = line.split()[1], "", []
        elif line.startswith("type ") and chain:
            if " hook input " in f" {line} ":
                inputs.append(chain)
                found = re.search(r"policy (\w+)", line)
                policy = found.group(1) if found else "accept"
        elif line == "}" and chain:
            chains.append(Chain(chain, policy, tuple(rules)))
            chain = ""
        elif line == "}" and name:
            tables.append(NftTable(family, name, tuple(chains), tuple(inputs)))
            name = ""
        elif line and chain and not line.startswith("#"):
            rules.append(line)
    return tuple(tables)


def nft_blocks(table: NftTable, port: int) -> Block | None:
    chains = {c.name: c for c in table.chains}
    for start in table.inputs:
        verdict = walk(chains, start, port, nft_decide)
        if verdict is None and chains[start].policy == "drop":
            verdict = f"drop: policy drop of chain {start}"
        if verdict and verdict.startswith("drop"):
            return Block("nftables", f"table {table.family} {table.name}, chain {start}: {verdict[6:]}",
                         f"nftables {table.family} {table.name} {start}")
    return None


def parse_iptables(text: str) -> dict[str, Chain]:
    policies = {m.group(1): m.group(2) for m in re.finditer(r"^:(\S+) (\S+)", text, re.M)}
    rules: dict[str, list[str]] = {name: [] for name in policies}
    for line in text.splitlines():
        if line.startswith("-A "):
            name, _, rule = line[3:].partition(" ")
            rules.setdefault(name, []).append(rule)
    return {n: Chain(n, policies.get(n, "-"), tuple(r)) for n, r in rules.items()}


# ------------------------------------------------------------------ the fact
@dataclass(frozen=True)
class HostFirewall:
    """What filters new connections to the VPS: each firewall found (None or empty: not there)."""

    ufw: Ufw | None = None
    firewalld: Firewalld | None = None
    nft: tuple[NftTable, ...] = ()  # tables of their own (not iptables-nft's, not firewalld's)
    iptables: dict[str, Chain] | None = None
    persistent: bool = False  # netfilter-persistent installed: it restores saved iptables rules at boot

    @property
    def active(self) -> list[str]:
        """The firewalls that filter incoming connections, in words."""
        found = []
        if self.ufw and self.ufw.active:
            found.append(f"ufw active (default {self.ufw.incoming} incoming)")
        if self.firewalld:
            found.append(f"firewalld running (zone {self.firewalld.zone})")
        found += [f"nftables table {t.family} {t.name}" for t in self.nft if t.inputs]
        if self.iptables and "INPUT" in self.iptables and not (self.ufw and self.ufw.active) and \
                (self.iptables["INPUT"].rules or self.iptables["INPUT"].policy != "ACCEPT"):
            found.append("iptables rules" + (" (saved by netfilter-persistent)" if self.persistent else ""))
        return found

    def blocks(self, port: int) -> Block | None:
        """What blocks a new TCP connection from anywhere to `port`, or None. ufw and firewalld, when on, manage
        the rules below them; otherwise every table of nftables and then iptables' INPUT chain."""
        if self.ufw and self.ufw.active:
            return self.ufw.blocks(port)
        if self.firewalld:
            return self.firewalld.blocks(port)
        for table in self.nft:
            found = nft_blocks(table, port)
            if found:
                return found
        if self.iptables and "INPUT" in self.iptables:
            verdict = walk(self.iptables, "INPUT", port, iptables_decide)
            if verdict is None and self.iptables["INPUT"].policy in ("DROP", "REJECT"):
                verdict = f"drop: policy {self.iptables['INPUT'].policy} of chain INPUT"
            if verdict and verdict.startswith("drop"):
                saved = " (saved in /etc/iptables/rules.v4)" if self.persistent else ""
                return Block("iptables", f"{verdict[6:]}{saved}", "iptables")
        return None


def sections(output: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("@@") and " " not in line:
            current = found.setdefault(line[2:], [])
        else:
            current.append(line)
    return {k: "\n".join(v) for k, v in found.items()}


def host_firewall(output: str) -> HostFirewall:
    part = sections(output)
    iptables = parse_iptables(part.get("iptables", ""))
    firewalld = parse_firewalld(part.get("firewalld", ""))
    tables = tuple(t for t in parse_nft(part.get("nft", ""))
                   if not (t.family in ("ip", "ip6") and t.name in IPTABLES_TABLES and iptables)
                   and not t.name.startswith("firewalld"))
    return HostFirewall(parse_ufw(part.get("ufw", "")), firewalld, tables, iptables or None,
                        part.get("persistent", "").strip() == "installed")


FIREWALL = Fact("host-firewall", FIREWALL_SCRIPT, host_firewall)


def published(inv: Inventory, vps: VpsSpec) -> dict[int, str]:
    """port -> what the world reaches there: 80 and 443 (with TLS) when there are http routes, each public ssh
    tunnel's port, the metrics port unless it listens on loopback."""
    ports: dict[int, str] = {}
    if http_routes(inv, vps):
        ports[vps.http_port] = "http routes"
        if vps.tls_certificate or vps.acme:
            ports[vps.https_port] = "https routes"
    for path, t in inv.tunnels_on(vps):
        if t.kind == "ssh" and t.public and path.name not in inv.revoked:
            ports.setdefault(t.remote_port, f"{path.name}'s ssh tunnel {t.name}")
    if vps.metrics and not vps.metrics_address.startswith("127."):
        ports.setdefault(metrics_port(vps.metrics_address), "metrics")
    return dict(sorted(ports.items()))


def blocked(found: HostFirewall, ports: Sequence[int]) -> dict[int, Block]:
    return {p: b for p in ports if (b := found.blocks(p)) is not None}
