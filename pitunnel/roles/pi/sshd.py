"""The Pi's sshd as it is: per-source penalties, effective password login through the tunnel, and the
warning a public ssh tunnel with passwords on earns."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from pitunnel.facts import Fact
from pitunnel.inventory import PiSpec, TunnelSpec, VpsSpec
from pitunnel.ops import Observe


def has_penalties(fact_output: str) -> bool:
    return fact_output.strip() not in ("", "0")


PENALTIES = Fact("sshd-penalties", "sshd -T 2>/dev/null | grep -ci '^persourcepenalties ' || true", has_penalties)


def penalties_observer() -> Observe[bool]:
    """Does this Pi's sshd have per-source penalties (OpenSSH 9.8 and later)?"""
    return Observe(PENALTIES, lambda on: "yes" if on else "no (older OpenSSH)", title="sshd has per-source penalties")


def passwords_on(fact_output: str) -> bool | None:
    """True if sshd lets a password in (directly or by keyboard-interactive), None if it could not tell."""
    settings = dict(line.lower().split(None, 1) for line in fact_output.splitlines() if len(line.split()) == 2)
    if "passwordauthentication" not in settings:
        return None
    return "yes" in (settings.get("passwordauthentication"), settings.get("kbdinteractiveauthentication"))


@dataclass(frozen=True)
class SshdPasswords:
    """Password login as `sshd -T` has it: `on` (None: it could not tell) and the settings it printed."""

    on: bool | None
    settings: tuple[str, ...]

    @property
    def seen(self) -> str:
        return ", ".join(self.settings) or "nothing (sshd -T failed)"


def sshd_passwords(fact_output: str) -> SshdPasswords:
    return SshdPasswords(passwords_on(fact_output), tuple(fact_output.strip("\n").split("\n")) if fact_output.strip() else ())


def sshd_passwords_fact(pi: PiSpec) -> Fact[SshdPasswords]:
    """Does the Pi's sshd let its login user in with a password, as a connection through a tunnel gets its
    settings (from 127.0.0.1)? `sshd -T` is the truth, whatever drop-in (cloud-init's, ours) set them."""
    spec = shlex.quote(f"user={pi.user},host=localhost,addr=127.0.0.1")
    return Fact("sshd-passwords-loopback", f"sshd -T -C {spec} "
                "2>/dev/null | grep -iE '^(passwordauthentication|kbdinteractiveauthentication) ' || true", sshd_passwords)


def public_ssh_tunnels(pi: PiSpec) -> list[TunnelSpec]:
    return [t for t in pi.tunnels if t.kind == "ssh" and t.public]


def public_ssh_ports(pi: PiSpec) -> list[int]:
    return [t.remote_port for t in public_ssh_tunnels(pi)]


def password_warning(pi: PiSpec, vpses: Sequence[VpsSpec], on: bool | None) -> str | None:
    """Password login on a Pi whose sshd is public through its VPSes (each named): anyone may guess, and
    everything through the tunnel comes from 127.0.0.1, which sshd's penalties exempt (and fail2ban cannot
    tell apart)."""
    public = public_ssh_tunnels(pi)
    if not public or on is False or pi.disable_password_login:  # with it, provision-pi turns them off after keys work
        return None
    where = ", ".join(f"{vps.address}:{t.port_on(vps.name)}" for vps in vpses for t in public)
    state = "accepts passwords" if on else "may accept passwords (sshd -T could not be read)"
    return (f"{pi.name}'s sshd is public at {where} and {state}: anyone can guess them, from "
            f"127.0.0.1 as far as the Pi can tell; set `disable_password_login: true` for {pi.name} once key login works")


def passwords_observer(pi: PiSpec, vpses: Sequence[VpsSpec]) -> Observe[SshdPasswords]:
    def describe(found: SshdPasswords) -> str:
        on = found.on
        if password_warning(pi, vpses, on):
            return "on, with a public ssh tunnel (see the WARNING)"
        if on is False:
            return "off (sshd -T)"
        return "on, turned off once key login works (disable_password_login)" if pi.disable_password_login else \
            f"{'on' if on else 'unknown'} (no public ssh tunnel)"
    return Observe(sshd_passwords_fact(pi), describe, title="sshd password login (effective, via the tunnel)")
