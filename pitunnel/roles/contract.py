"""The contract between a VPS and its Pis: what one host needs from another, as values.

A Pi offers each of its VPSes its tunnel key (one key for all: docs/security.md says why), parsed once where it
is read on the Pi, and the listeners that key may open (PiOffer); a VPS tells its Pis the host keys to pin and
what listens on it now (VpsFacts). roles/site.py carries these from one role to the other; neither role imports
the other. A listener is an inventory value (inventory.Listener, made from a TunnelSpec): its `spec` is the one
spelling of it that -R, permitlisten and `ss` share (PermitListen permits its host with any port).
"""

from __future__ import annotations

from dataclasses import dataclass

from pitunnel.inventory import Listener, PiPath, TunnelSpec
from pitunnel.sshkeys import PublicKey


def listen_spec(tunnel: TunnelSpec) -> str:
    """The tunnel's listener as the Pi's `-R` sends it, as permitlisten must spell it and as `ss` prints it
    (`host:port`)."""
    return tunnel.listener.spec


def realm(pi: str) -> str:
    """The basic-auth realm of a Pi's http routes, as Nginx sends it and verify expects it: the Pi's name; but
    Nginx reads `auth_basic off`, quoted or not, as no basic auth at all, so a Pi named off gets "off (pitunnel)"."""
    return pi if pi != "off" else f"{pi} (pitunnel)"


def listens(path: PiPath) -> tuple[Listener, ...]:
    """Every listener a Pi's tunnel opens on the VPS of this path."""
    return tuple(t.listener for t in path.tunnels)


@dataclass(frozen=True)
class PiOffer:
    """What a VPS needs from one of its Pis: its tunnel key, parsed (None while there is none yet: check mode
    before the key is made), and the listeners that key may open."""

    name: str
    pubkey: PublicKey | None
    listens: tuple[Listener, ...]


def offer_on(offer: PiOffer, path: PiPath) -> PiOffer:
    """A Pi's offer to the VPS of one of its paths: the same key, the listeners there."""
    return PiOffer(offer.name, offer.pubkey, listens(path))


@dataclass(frozen=True)
class VpsFacts:
    """What a Pi needs from its VPS: the host keys to pin (`type blob`), and what listens there now.
    `refused`: the Pis whose key the VPS refused (another Pi's): their tunnel there is left as it is.
    `bootstrapped`: the enrolled Pis whose bootstrap key it still accepts: provision-pi retires it."""

    host_keys: tuple[str, ...]
    listeners: frozenset[str]
    refused: frozenset[str] = frozenset()
    bootstrapped: frozenset[str] = frozenset()  # the Pis whose bootstrap key (pitunnel enroll) is still there
