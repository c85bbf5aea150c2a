"""Read-only checks of the VPS: they change nothing and say in one line what they found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pitunnel.facts import Fact, Facts, command_fact
from pitunnel.ops import Op, Plan


@dataclass
class SshdPasswordsCheck(Op):
    """Changes nothing: warns when the effective sshd config lets passwords in (as root would log in)."""

    title: str = "sshd password logins for root (effective config, read only)"

    def facts(self) -> list[Fact[Any]]:
        return [command_fact("sshd-passwords", "sshd -T -C user=root,host=pitunnel-check,addr=192.0.2.1 2>/dev/null "
                             "| grep -iE '^(passwordauthentication|kbdinteractiveauthentication|permitrootlogin) '")]

    def plan(self, facts: Facts) -> Plan:
        settings = dict(line.split(None, 1) for line in facts["sshd-passwords"][1].splitlines() if " " in line)
        if settings.get("passwordauthentication") == "yes":
            return Plan([], "WARNING: sshd accepts passwords (PasswordAuthentication yes); left as it is, "
                        "consider key-only login")
        return Plan([], "passwords refused")
