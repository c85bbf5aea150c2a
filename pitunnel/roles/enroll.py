"""`pitunnel enroll PI --boot DIR` across hosts: the Pi's bootstrap key authorised on each of its VPSes (its
listeners alone, until it expires; an earlier bootstrap key of the Pi replaced, its sessions ended), each VPS's
host keys read for the Pi to pin; then, only if every VPS took it, the first-boot files written and the Pi's
host key pinned in the laptop's known_hosts. The Pi itself is not contacted (it has not booted yet)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pitunnel import hostkeys
from pitunnel.enroll import KeyPair, WiFi, new_key, seed, write_seed
from pitunnel.facts import LISTENERS
from pitunnel.inventory import PiSpec
from pitunnel.ops import Observe
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.runner import StepFailed, converge, facts_for
from pitunnel.sshkeys import parse_public_key
from pitunnel.roles.vps.authorized import authorized_line, keys_ops
from pitunnel.roles.vps.keys import HOST_KEYS
from pitunnel.roles.vps.steps import account_observer, permits, permitted_fact

TITLE = "enrolment files"


@dataclass(frozen=True)
class Request:
    """What the command line asks: the Pi, the folder, the Wi-Fi (None: wired) and the bootstrap key's expiry."""

    pi: PiSpec
    boot: Path
    network: WiFi | None
    expires: datetime


def authorise(play: Play, remote: Remote, pi: PiSpec, key: KeyPair, expires: str) -> tuple[str, ...]:
    """The bootstrap key in the VPS's tunnel account, for the Pi's listeners there alone, until `expires`; the
    VPS's host keys returned. Raises StepFailed when the VPS is not ready for the Pi (provision-vps first)."""
    inv, reporter, mode = play.inventory, play.reporter, play.options.mode
    vps = inv.vps[remote.name]
    path = pi.path(vps.name)
    account = account_observer(vps)
    keys = Observe(HOST_KEYS, lambda v: f"{len(v.current)} host keys read", title="VPS host keys")
    permitted = Observe(permitted_fact(vps), lambda v: "read", title="listeners sshd permits the tunnel account")
    ops = keys_ops(inv, vps, {}, bootstrap={pi.name: authorized_line(vps, path, key.public, expires=expires)})
    known = facts_for(remote, [account, keys, permitted, Observe(LISTENERS, lambda v: "read", title="listeners"),
                               *ops])
    converge(remote, [account, keys, permitted], reporter, mode, known=known)
    missing = [t.listener.spec for t in path.tunnels if not permits(known.value(permitted.fact), t.listener)]
    if not known.value(account.fact) or missing:
        why = (f"{vps.tunnel_user} does not exist" if not known.value(account.fact)
               else f"sshd does not permit {', '.join(missing)} yet")
        reporter.line(remote.name, "failed", f"bootstrap key of {pi.name}",
                      f"{why}: run `pitunnel provision-vps` first (nothing was written)")
        raise StepFailed("VPS not ready")
    converge(remote, ops, reporter, mode, known=known)
    return known.value(HOST_KEYS).current


def enroll(play: Play, request: Request) -> None:
    """The bootstrap key on every VPS of the Pi, then the files and the pin on the laptop (not in check mode)."""
    pi, reporter, mode = request.pi, play.reporter, play.options.mode
    host, bootstrap = new_key(), new_key()
    stamp = request.expires.strftime("%Y%m%d%H%M%SZ")
    vpses = play.inventory.vpses_of(pi)
    found = play.each(vpses, lambda remote: authorise(play, remote, pi, bootstrap, stamp))
    if len(found) < len(vpses):
        reporter.line(pi.name, "failed", TITLE, f"not written: {', '.join(v.name for v in vpses if v.name not in found)} "
                      "did not take the bootstrap key (see above)")
        play.failed.add(pi.name)
        return
    made = seed(play.inventory, pi, dict(found), expires=request.expires, network=request.network, host=host,
                bootstrap=bootstrap)
    name = play.remotes[pi.name].target.known_name
    if mode.check:
        reporter.line(pi.name, "would change", TITLE, f"{request.boot}: {', '.join(made.files)} (mode 600, with private "
                      f"keys); its new host key pinned as {name} in {play.inventory.settings.known_hosts}")
        return
    written = write_seed(request.boot, made.files)
    known_hosts = play.inventory.settings.known_hosts
    hostkeys.rewrite(known_hosts, name, keep=lambda _: False, add=[host.public])
    shown = parse_public_key(host.public).fingerprint
    reporter.line(pi.name, "changed", TITLE,
                  f"{request.boot}: {', '.join(written)}, readable by you alone: they hold the Pi's host key and its "
                  f"bootstrap key (accepted until {request.expires:%Y-%m-%d %H:%M} UTC); keep the card to yourself "
                  "until the Pi has booted")
    reporter.line(pi.name, "changed", "host key pinned", f"{name} {shown} in {known_hosts} (made here: no "
                  "key is accepted on first use)")
