"""Debian package operations: installed (the package lists fetched first when stale), or purged if pitunnel
installed them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..facts import Fact, Facts
from .base import Op, Plan
from .records import record_commands, record_fact, recorded, unrecord_commands
from .shell import q


APT_FRESH_SECONDS = 6 * 3600
# What `apt-get update` fetches before an install: the package lists only, gzip-compressed. Measured
# on a lab host (Debian 12, one source): 2.1 CPU s by default, 1.55 s without the translations of
# package descriptions (which an install never reads), 1.1 s with gzip instead of xz lists too. A Pi's
# CPU is slow and it pays this once per fresh host; the gzip lists are a few MB more to download.
APT_UPDATE_OPTIONS = "-o Acquire::Languages=none -o Acquire::CompressionTypes::Order::=gz"


def _pkg_status(output: str) -> dict[str, tuple[str, ...]]:
    """name -> dpkg status words (several for a package installed for several architectures)."""
    return {name: tuple(status) for name, *status in (line.split() for line in output.splitlines() if line.split())}


def _pkg_fact(names: Sequence[str]) -> Fact[dict[str, tuple[str, ...]]]:
    joined = " ".join(q(n) for n in names)
    return Fact(f"pkgs:{joined}", f"for p in {joined}; do s=$(dpkg-query -W -f '${{db:Status-Status}} ' $p "
                "2>/dev/null) || s=not-installed; echo \"$p $s\"; done", _pkg_status)


def _seconds(output: str) -> int:
    """A number of seconds; none read: older than any limit."""
    return int(output.strip() or 10**9)


APT_AGE = Fact("apt-lists-age", "now=$(date +%s); newest=$(stat -c %Y /var/lib/apt/lists/*_Packages "
               "2>/dev/null | sort -n | tail -1); echo $(( now - ${newest:-0} ))", _seconds)


def apt_install_commands(names: Sequence[str], *, update: bool) -> list[str]:
    """Install `names` (no recommends, no questions), after fetching the package lists if `update`."""
    install = ("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
               + " ".join(q(n) for n in names) + " >/dev/null")
    return [f"apt-get update -q {APT_UPDATE_OPTIONS} >/dev/null", install] if update else [install]


@dataclass
class Packages(Op):
    names: tuple[str, ...]
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"packages {' '.join(self.names)}"

    def facts(self) -> list[Fact[Any]]:
        return [_pkg_fact(self.names), APT_AGE]

    def plan(self, facts: Facts) -> Plan:
        status = facts.value(_pkg_fact(self.names))
        missing = [n for n in self.names if "installed" not in status.get(n, ())]
        if not missing:
            return Plan([], "installed")
        age = facts.value(APT_AGE)
        cmds = apt_install_commands(missing, update=age > APT_FRESH_SECONDS) + record_commands("packages", missing)
        why = "install " + ", ".join(missing) + (" (package lists stale: update first)" if age > APT_FRESH_SECONDS else "")
        return Plan(cmds, why)


@dataclass
class PackagesAbsent(Op):
    """Purged, if pitunnel installed them (recorded at install): a package that was there before stays,
    with its config."""

    names: tuple[str, ...]
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"packages purged {' '.join(self.names)}"

    def facts(self) -> list[Fact[Any]]:
        return [_pkg_fact(self.names), record_fact("packages")]

    def plan(self, facts: Facts) -> Plan:
        status = facts.value(_pkg_fact(self.names))
        present = [n for n in self.names if set(status.get(n, ("not-installed",))) - {"not-installed"}]
        ours = recorded(facts, "packages")
        purge = [n for n in present if n in ours]
        kept = [n for n in present if n not in ours]
        why_kept = f"kept {', '.join(kept)}: installed before pitunnel (no record that pitunnel installed it)" if kept else ""
        if not purge:
            return Plan([], why_kept or "not installed")
        return Plan(["DEBIAN_FRONTEND=noninteractive apt-get purge -y -q --autoremove "
                     + " ".join(q(n) for n in purge) + " >/dev/null", *unrecord_commands("packages", purge)],
                    "; ".join(filter(None, ["purge " + ", ".join(purge), why_kept])))
