"""Read-only checks of the VPS: they change nothing and say in one line what they found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pitunnel.facts import Fact, Facts
from pitunnel.ops import Op, Plan


def settings(output: str) -> dict[str, str]:
    """keyword -> value of each `sshd -T` line."""
    return dict(line.split(None, 1) for line in output.splitlines() if " " in line)


ROOT_PASSWORDS = Fact("sshd-passwords", "sshd -T -C user=root,host=pitunnel-check,addr=192.0.2.1 2>/dev/null "
                      "| grep -iE '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) '", settings)


@dataclass
class SshdPasswordsCheck(Op):
    """Changes nothing: warns when the effective sshd config lets passwords in (as root would log in)."""

    title: str = "sshd password logins for root (effective config, read only)"

    def facts(self) -> list[Fact[Any]]:
        return [ROOT_PASSWORDS]

    def plan(self, facts: Facts) -> Plan:
        if facts.value(ROOT_PASSWORDS).get("passwordauthentication") == "yes":
            return Plan([], "WARNING: sshd accepts passwords (PasswordAuthentication yes); left as it is, "
                        "consider key-only login")
        return Plan([], "passwords refused")
