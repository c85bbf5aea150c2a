"""`pitunnel revoke PI`: a Pi lost or stolen, and out of reach, shut out of every one of its VPSes. The Pi
itself is never contacted.

First the laptop remembers it (the inventory's .revoked.yml: the keys the Pi had on its VPSes, its ports),
so that every later run honours it even if this one is cut short; then on each VPS its key lines leave the
tunnel account, its sessions end (their listeners close with them), and its Nginx routes go.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pitunnel.facts import Fact, FileState, file_fact, gather
from pitunnel.inventory import Inventory, PiSpec, Revoked, VpsSpec
from pitunnel.inventory.revoked import records, revoked_file, shut_out, write_revoked
from pitunnel.ops import Absent, File, Op
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.runner import converge
from pitunnel.sshkeys import PublicKey, parse_public_key
from pitunnel.roles.vps.sessions import SessionsEnded
from pitunnel.roles.vps.authorized import BOOTSTRAP_MARKER, KEY_MARKER, keys_path, parse_authorized_keys, revoked_keys_file
from pitunnel.roles.vps.nginx import route_stem
from pitunnel.roles.vps.role import VPS_DEFAULTS
from pitunnel.roles.vps.steps import context, handlers, sshd_dropin

TITLE = "revoked, remembered on the laptop"


def next_steps(name: str) -> str:
    """What the owner does next (under the recap; docs/operations.md says the same)."""
    return (f"{name} is shut out of its VPSes, and every later run leaves it out. Next: change every password and "
            f"secret {name} held (its Wi-Fi, its apps' accounts, API tokens); when you have it back, re-image it, then "
            f"`pitunnel provision-pi --limit {name}` (a new key is made on it) and `pitunnel provision-vps` (its "
            f"routes); or remove it from the inventory and free its ports: `pitunnel revoke {name} --release-ports`")


def ports_of(pi: PiSpec) -> dict[str, dict[str, int]]:
    """The Pi's remote ports on each of its VPSes, reserved while it is revoked."""
    return {vps: {t.name: t.port_on(vps) for t in pi.tunnels} for vps in pi.all_vps}


def target(inv: Inventory, name: str) -> PiSpec:
    return inv.pis[name] if name in inv.pis else inv.shut[name]


def record_of(inv: Inventory, name: str, found: list[PublicKey], now: str) -> Revoked:
    """The Pi's record: the keys revoked before and the ones its VPSes showed now, its ports, since when."""
    before, earlier = inv.revoked.get(name), inv.retired.get(name)  # revoked now; revoked once, and back since
    keys = tuple(dict.fromkeys([*(earlier.keys if earlier else ()), *(before.keys if before else ()), *found]))
    return Revoked(name, before.since if before else now, keys, ports_of(target(inv, name)))


def key_lines_fact() -> Fact[dict[str, list[str]]]:
    """Each Pi's keys in the tunnel account's authorized_keys."""
    fact = file_fact(keys_path())
    return Fact(f"pis-keys:{keys_path()}", fact.script, lambda out: _keys(fact.process(out)))


def _keys(state: FileState) -> dict[str, list[str]]:
    return parse_authorized_keys(state.content.decode(errors="replace")) if state.exists else {}


def keys_off(vps: VpsSpec, record: Revoked) -> File:
    """authorized_keys without the Pi's lines (and without any line of pitunnel's holding one of its keys);
    every other line kept as it is."""
    gone = {k.line for k in record.keys}

    def render(state: FileState) -> str:
        kept = []
        for line in state.content.decode(errors="replace").splitlines():
            words = line.split()
            ours = len(words) >= 3 and words[-1].startswith((KEY_MARKER, BOOTSTRAP_MARKER))
            if ours and (words[-1] in (KEY_MARKER + record.pi, BOOTSTRAP_MARKER + record.pi)
                         or f"{words[-3]} {words[-2]}" in gone):
                continue
            kept.append(line + "\n")
        return "".join(kept)

    return File(keys_path(), render, owner=vps.tunnel_user, group=vps.tunnel_user, mode=0o600, create=False,
                title=f"{record.pi}'s keys off the tunnel account")


def routes_off(pi: PiSpec) -> list[Op]:
    """The Pi's Nginx files, whatever kind each route is now: pitunnel named each for the Pi and the tunnel."""
    ops: list[Op] = []
    for t in pi.tunnels:
        if t.kind != "http":
            continue
        stem = route_stem(pi.name, t.name)
        ops += [Absent(f"{VPS_DEFAULTS['nginx_sites_dir']}/pitunnel-{stem}.conf", notify=("reload nginx",),
                       title=f"nginx site of {pi.name}/{t.name} off"),
                Absent(f"{VPS_DEFAULTS['nginx_locations_dir']}/{stem}.conf", notify=("reload nginx",),
                       title=f"nginx path of {pi.name}/{t.name} off"),
                Absent(f"{VPS_DEFAULTS['nginx_auth_dir']}/{stem}.htpasswd", notify=("reload nginx",),
                       title=f"basic auth of {pi.name}/{t.name} off")]
    return ops


def revoke(play: Play, name: str) -> None:
    """The record on the laptop first (from what the Pi's VPSes hold), then each VPS closed to the Pi."""
    inv, mode, reporter = play.inventory, play.options.mode, play.reporter
    pi = target(inv, name)
    vpses = inv.vpses_of(pi)
    fact = key_lines_fact()

    def read(remote: Remote) -> list[str]:
        return gather(remote, [fact]).value(fact).get(name, [])

    found = play.each(vpses, read)
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    record = record_of(inv, name, [parse_public_key(k) for v in vpses for k in found.get(v.name, [])], now)
    shown = ", ".join(k.fingerprint for k in record.keys) or "no key of it on its VPSes"
    file = revoked_file(inv.path)
    if record == inv.revoked.get(name):
        reporter.line(name, "ok", TITLE, f"already, since {record.since} ({shown}); {name} was not contacted")
    else:
        reporter.line(name, "would change" if mode.check else "changed", TITLE,
                      f"{file.name}: {shown}; its ports stay reserved; {name} was not contacted")
        if not mode.check:
            write_revoked(file, {**records(inv), name: record})
    play.inventory = shut = shut_out(inv, record)

    def close(remote: Remote) -> None:
        vps = shut.vps[remote.name]
        keys = keys_off(vps, record)
        # sshd applies a key at login only: its sessions (the outsider's too) end here, their listeners with them
        # and sshd refuses its keys outright (RevokedKeys), should a line of one ever come back
        variables = context(shut, vps)
        converge(remote, [keys, SessionsEnded(vps.tunnel_user, keys), revoked_keys_file(shut), sshd_dropin(variables),
                          *routes_off(pi)], reporter, mode, handlers(remote))

    closed = play.each(vpses, close)
    left = [v.name for v in vpses if v.name not in closed]
    if left:
        reporter.warn(name, f"{name} is NOT yet shut out of {', '.join(left)} (see above): rerun `pitunnel revoke "
                            f"{name}` once it answers. Every later run leaves {name} out meanwhile")
    else:
        reporter.warn(name, next_steps(name))
