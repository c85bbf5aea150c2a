"""The Pi role's steps. What a Pi must look like: autossh, a tunnel account with a key made on the Pi, and
for each of its VPSes (a path) that VPS's host key pinned, a keepalive ssh config for that VPS only, and an
instance of a systemd template unit (pitunnel@<vps>.service) that keeps that tunnel up, with its own watchdog."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pitunnel.facts import Fact, Facts
from pitunnel.guard import pending_changes
from pitunnel.hostkeys import known_name
from pitunnel.inventory import Forward, Inventory, PiPath, PiSpec, VpsSpec
from pitunnel.ops import (Absent, Directory, File, Handler, KeyPair, Later, Observe, Op, Packages, PackagesAbsent,
                          Service, SystemUser, UserAbsent, arm_later, managed_lines)
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.report import Reporter
from pitunnel.runner import StepFailed, converge, facts_for, sshd_reload
from pitunnel.sshkeys import BadPublicKey, PublicKey, parse_public_key
from pitunnel.roles.contract import PiOffer, listens
from pitunnel.roles.pi.locations import (home_of, key_comment, key_path, tunnel_home, unit, vps_config_dir,
                                         watchdog_path, watchdog_unit)
from pitunnel.roles.pi.role import PI_DEFAULTS, ROLE
from pitunnel.roles.pi.sshd import PENALTIES, password_warning, passwords_observer, penalties_observer


def forwards(path: PiPath) -> list[Forward]:
    """Every -R of this Pi on the VPS of this path: listen where the inventory says, forward to the Pi's own port."""
    return [t.forward for t in path.tunnels]


def laptop_key_line(inv: Inventory) -> str | None:
    if inv.settings.laptop_key is None:
        return None
    keytype, blob = inv.settings.laptop_key.with_name(inv.settings.laptop_key.name + ".pub").read_text().split()[:2]
    return f"{keytype} {blob} {PI_DEFAULTS['laptop_key_marker']}"


def refuse_bad_pubkey(reporter: Reporter, pi: PiSpec, key: KeyPair, text: str) -> PublicKey:
    """The Pi's reported public key, parsed here once, or a failure for this Pi alone: a key that does not
    parse is never sent to the VPS's authorized_keys."""
    try:
        return parse_public_key(text)
    except BadPublicKey as exc:
        reporter.line(pi.name, "failed", key.title,
                      f"{key.path}.pub is not a public key ({exc}); it is not sent to the VPS. Fix: on {pi.name}, "
                      f"rm {key.path}.pub and rerun: provisioning derives it again from the private key")
        raise StepFailed("bad public key") from None


def base_ops(inv: Inventory, pi: PiSpec) -> tuple[list[Op], KeyPair]:
    home = tunnel_home(pi)
    key = KeyPair(key_path(pi), owner=pi.tunnel_user, comment=key_comment(pi), title="tunnel key (made on the Pi)")
    ops: list[Op] = [Packages((PI_DEFAULTS["autossh_package"],))]
    if pi.tunnel_user != pi.user:
        ops.append(SystemUser(pi.tunnel_user, home=home, comment="pitunnel reverse tunnel"))
    ops.append(key)
    line = laptop_key_line(inv)
    if line is not None:
        ssh_dir = f"{home_of(pi.user)}/.ssh"
        ops += [Directory(ssh_dir, owner=pi.user, group=pi.user, mode=0o700),
                File(f"{ssh_dir}/authorized_keys", managed_lines(PI_DEFAULTS["laptop_key_marker"], {"": line}),
                     owner=pi.user, group=pi.user, mode=0o600, title="laptop's key for passwordless login")]
    return ops, key


def loopback_ops(pi: PiSpec, *, penalties: bool) -> list[Op]:
    """Everything that reaches the Pi's sshd through a tunnel comes from 127.0.0.1, where the tunnel's
    ssh connects from. sshd's per-source penalties would count every scanner knocking on the public
    tunnel port against that one address, then refuse everyone coming through the tunnel, the
    owner too (measured: 20 s of refusals after a burst of 200 connections). Exempt loopback."""
    if not penalties or not any(t.kind == "ssh" for t in pi.tunnels):
        return []
    return [File(PI_DEFAULTS["loopback_dropin"], ROLE.render("sshd-loopback.conf.j2"), validate="sshd -t",
                 notify=("reload sshd",), title="sshd: no per-source penalties for tunnel traffic (loopback)")]


def context(pi: PiSpec, vps: VpsSpec) -> dict[str, Any]:
    """The variables the Pi's templates are rendered with for its path through `vps` (the role's defaults
    under them), here and by the Ansible benchmark (benchmarks/ansible/inventory.py) alike: plain data (the
    benchmark writes them as YAML), each forward as its fields (`listen`, `target`), never a string to cut."""
    forwards_there = forwards(pi.path(vps.name))
    return dict(pi=pi.name, vps=vps.name, vps_address=vps.address, vps_port=vps.port,
                vps_tunnel_user=vps.tunnel_user, key_path=key_path(pi), tunnel_user=pi.tunnel_user,
                tunnel_home=tunnel_home(pi), server_alive_interval=pi.server_alive_interval,
                server_alive_count_max=pi.server_alive_count_max, forwards=[f.spec for f in forwards_there],
                remote_forwards=[dict(listen=f.listener.spec, target=f.target) for f in forwards_there],
                connect_timeout=PI_DEFAULTS["tunnel_connect_timeout"], hang_after_ms=hang_after_ms(pi),
                stale_after_ms=stale_after_ms(pi), suspect_after_ms=suspect_after_ms(pi, vps),
                check_every=PI_DEFAULTS["watchdog_every"],
                route_proto=PI_DEFAULTS["route_proto"], unit=unit(vps.name), vps_config_dir=vps_config_dir(vps.name),
                autossh_poll=PI_DEFAULTS["autossh_poll"])


def unit_context(pi: PiSpec) -> dict[str, Any]:
    """The variables of the template units, the same for every VPS (systemd fills in %i)."""
    return dict(pi=pi.name, tunnel_user=pi.tunnel_user, tunnel_home=tunnel_home(pi))


def restart(vps: str) -> tuple[str]:
    return (f"restart tunnel {vps}",)


def restart_watchdog(vps: str) -> tuple[str]:
    return (f"restart watchdog {vps}",)


def template_ops(pi: PiSpec) -> list[Op]:
    """What every path of the Pi shares: the template units (a change restarts every running instance), and
    the retirement of the single tunnel and watchdog of earlier versions (pitunnel made them: their names and
    files are its own) before any instance starts, so the old tunnel frees its ports on the VPS first."""
    variables = unit_context(pi)
    every = tuple(name for v in pi.all_vps for name in restart(v))
    watchdogs = tuple(name for v in pi.all_vps for name in restart_watchdog(v))
    return [
        Service(PI_DEFAULTS["legacy_unit"], enabled=False, running=False, title=f"single-VPS {PI_DEFAULTS['legacy_unit']} retired"),
        Service(PI_DEFAULTS["legacy_watchdog_unit"], enabled=False, running=False, title="single-VPS watchdog retired"),
        # the watchdog ran from a timer before it became a service that waits for network events
        Service(PI_DEFAULTS["watchdog_timer"], enabled=False, running=False, title="old watchdog timer retired"),
        *(Absent(path, notify=("daemon-reload",)) for path in (
            f"/etc/systemd/system/{PI_DEFAULTS['legacy_unit']}", f"/etc/systemd/system/{PI_DEFAULTS['legacy_watchdog_unit']}",
            f"/etc/systemd/system/{PI_DEFAULTS['watchdog_timer']}")),
        *(Absent(path) for path in (PI_DEFAULTS["watchdog_path"], f"{PI_DEFAULTS['config_dir']}/ssh_config",
                                    f"{PI_DEFAULTS['config_dir']}/known_hosts")),
        Directory(PI_DEFAULTS["config_dir"]),
        File(PI_DEFAULTS["unit_path"], ROLE.render("pitunnel.service.j2", **variables), notify=every,
             title=f"systemd template unit {PI_DEFAULTS['unit']}"),
        File(f"/etc/systemd/system/{PI_DEFAULTS['watchdog_unit']}", ROLE.render("watchdog.service.j2", **variables),
             notify=watchdogs, title=f"systemd template unit {PI_DEFAULTS['watchdog_unit']}"),
    ]


def path_ops(pi: PiSpec, vps: VpsSpec, vps_host_keys: list[str]) -> list[Op]:
    """The Pi's tunnel to one VPS: that VPS's host keys pinned, its ssh config, its unit instance and watchdog."""
    variables = context(pi, vps)
    folder = vps_config_dir(vps.name)
    return [
        Directory(folder),
        pins_file(vps, vps_host_keys, restart(vps.name)),
        File(f"{folder}/ssh_config", ROLE.render("ssh_config.j2", **variables), notify=restart(vps.name),
             title=f"{vps.name}: tunnel ssh config (keepalives and forwards for this VPS only)"),
        Service(unit(vps.name), covers=restart(vps.name)),
        File(watchdog_path(vps.name), ROLE.render("watchdog.sh.j2", **variables), mode=0o755,
             notify=restart_watchdog(vps.name),
             title=f"{vps.name}: watchdog (network back, a hung tunnel ssh, quick ACKs to the VPS)"),
        Service(watchdog_unit(vps.name), covers=restart_watchdog(vps.name)),
    ]


def retired_path_ops(vps: str) -> list[Op]:
    """A VPS the Pi no longer names: its instance and watchdog stopped, its files gone."""
    return [Service(unit(vps), enabled=False, running=False, title=f"{vps}: tunnel retired (no longer its VPS)"),
            Service(watchdog_unit(vps), enabled=False, running=False, title=f"{vps}: watchdog retired"),
            Absent(vps_config_dir(vps)), Absent(watchdog_path(vps))]


def pins_file(vps: VpsSpec, vps_host_keys: Sequence[str], notify: tuple[str, ...] = ()) -> File:
    """The host keys the tunnel's ssh to `vps` accepts (several while `rotate-vps-hostkey` runs)."""
    return File(f"{vps_config_dir(vps.name)}/known_hosts", pins_text(vps, vps_host_keys), notify=notify,
                title=f"{vps.name}: VPS host key pinned")


def pins_text(vps: VpsSpec, vps_host_keys: Sequence[str]) -> str:
    """A known_hosts text that names the VPS as the tunnel's ssh looks it up, with these keys (`type blob`)."""
    return "".join(f"{known_name(vps.address, vps.port)} {k}\n" for k in vps_host_keys)


def pinned(text: str) -> tuple[str, ...]:
    """The keys (`type blob`) of a pins file."""
    return tuple(" ".join(line.split()[1:3]) for line in text.splitlines() if len(line.split()) >= 3)


def tunnel_ops(inv: Inventory, pi: PiSpec, vps: VpsSpec, vps_host_keys: list[str]) -> list[Op]:
    """Everything for the Pi's path through `vps` alone (the ops of a Pi with that one VPS)."""
    return [*template_ops(pi), *path_ops(pi, vps, vps_host_keys)]


def hang_after_ms(pi: PiSpec) -> int:
    """Silence after which a tunnel ssh counts as hung: its own keepalive window, plus slack."""
    return (pi.server_alive_interval * (pi.server_alive_count_max + 1) + 5) * 1000


def stale_after_ms(pi: PiSpec) -> int:
    """Time without a word from the VPS after which a connection counts as dead once the network is
    back. A live one hears from the VPS at least this often even when idle: the VPS answers the Pi's own
    keepalive, which goes out after ServerAliveInterval of silence; plus slack. (sshd's client-alive
    probe cannot be counted on to shorten it: in the lab, with OpenSSH 9.2 on the VPS, an idle tunnel
    heard from the VPS only every ServerAliveInterval, 10 s, although ClientAliveInterval was 5; with
    10.0 the probe came every 5 s.)"""
    return (pi.server_alive_interval + 3) * 1000


def suspect_after_ms(pi: PiSpec, vps: VpsSpec) -> int:
    """Time without a word from the VPS after which a connection is suspect once the network is back:
    dead at once if the VPS has not acknowledged what it was sent, else looked at again 3 s later. The
    quietest a live connection would be if the VPS's client-alive probes came in time; plus slack."""
    return (min(vps.client_alive_interval, pi.server_alive_interval) + 3) * 1000


# what a failed fresh login after each step's sshd change means
RELOAD_HINTS = {
    "tunnel": "a fresh login failed after changing sshd's settings",
    "passwords": "a fresh key login failed after turning passwords off",
    "teardown": "a fresh login failed after teardown's changes: the login that worked before does not now (for the "
                "laptop's key: the password or key the inventory gives was refused)",
}


def restart_tunnel(name: str) -> str:
    """Restart a running tunnel unit, once more a second later if systemd could not start it: in CI on trixie
    its start failed once with "unavailable resources" and the same restart worked a moment later. A unit
    that was not running stays stopped (try-restart); one that fails twice fails the handler."""
    return (f"systemctl try-restart {name} || {{ echo \"pitunnel: {name} did not start "
            f"(systemd: $(systemctl show -p Result --value {name})); once more in 1s\" >&2; sleep 1; "
            f"systemctl restart {name}; }}")


def restart_command(remote: Remote, vps: str) -> list[str]:
    """Restart the tunnel to `vps` if it runs; a moment later if our own connection rides that tunnel (away
    from home), so that this run hears the handler's result before the restart cuts the connection. That later
    restart is a plain `systemctl try-restart` (no run hears it; a start systemd fails is retried by the unit's
    own Restart=always): a shell command line in a transient unit does not survive the next daemon-reload,
    which re-reads it from its file and mangles its quotes (measured in the lab: the restart then failed)."""
    if getattr(remote, "through_tunnel", False) and getattr(remote, "gateway_name", None) == vps:
        return [f"systemd-run --quiet --collect --on-active={PI_DEFAULTS['restart_under_us_after']} "
                f"--timer-property=AccuracySec=100ms systemctl try-restart {unit(vps)}"]
    return [restart_tunnel(unit(vps))]


def handlers(remote: Remote, step: str = "tunnel", vpses: tuple[str, ...] = ()) -> list[Handler]:
    """The Pi role's handlers, for every step; sshd's reload is proven by a fresh login (a key login once
    passwords go off), else rolled back, the laptop's key too. A tunnel or watchdog of one VPS is restarted
    only if it runs (a path whose VPS did not answer this run is not started from half its files)."""
    per_vps = [handler for v in vpses for handler in (
        Handler(restart(v)[0], ["systemctl daemon-reload", *restart_command(remote, v)]),
        Handler(restart_watchdog(v)[0], ["systemctl daemon-reload", f"systemctl try-restart {watchdog_unit(v)}"]))]
    return [*per_vps,
            Handler("daemon-reload", ["systemctl daemon-reload"]),
            sshd_reload(remote, PI_DEFAULTS["ssh_service"], RELOAD_HINTS[step], keys_only=step == "passwords")]


def password_ops() -> list[Op]:
    return [File(PI_DEFAULTS["password_dropin"], "# Managed by pitunnel: key login was proven first.\n"
                 "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                 validate="sshd -t", notify=("reload sshd",), title="sshd: passwords off")]


@dataclass(frozen=True)
class PiBase:
    """What the base step learnt of one Pi: what it offers its VPS, and whether its sshd has penalties."""

    offer: PiOffer
    penalties: bool


def base(play: Play) -> dict[str, PiBase]:
    """On every selected Pi: autossh, the tunnel account, its key made on the Pi, the laptop's key. Needs
    nothing from the VPS, so `invoke provision` runs it while the VPS converges. Returns each Pi's base
    (a Pi that failed has none)."""
    inv, mode, reporter = play.inventory, play.options.mode, play.reporter

    def one(remote: Remote) -> PiBase:
        pi = inv.pis[remote.name]
        ops, key = base_ops(inv, pi)
        passwords = passwords_observer(pi, inv.vpses_of(pi))
        everything = [*ops, penalties_observer(), passwords]
        known = facts_for(remote, everything)
        found = known.value(key.fact)
        if found.public is not None:  # the .pub exists: whatever it holds must be a key
            refuse_bad_pubkey(reporter, pi, key, found.public)
        converge(remote, everything, reporter, mode, known=known)
        warning = password_warning(pi, inv.vpses_of(pi), known.value(passwords.fact).on)
        if warning:
            reporter.warn(pi.name, warning)
        pubkey: PublicKey | None = None
        if found.kept and found.public is not None:
            pubkey = refuse_bad_pubkey(reporter, pi, key, found.public)
        elif not mode.check:
            pubkey = refuse_bad_pubkey(reporter, pi, key, remote.run(f"cat {key.path}.pub").stdout)
        return PiBase(PiOffer(pi.name, pubkey, listens(pi.first_path)), known.value(PENALTIES))

    return play.each_selected(inv.pis.values(), one)


def vps_folders(output: str) -> frozenset[str]:
    return frozenset(name for name in output.split() if re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name))


# The VPSes the Pi has a path to now: a folder of its own under config_dir.
VPS_FOLDERS = Fact("vps-folders", f"find {PI_DEFAULTS['config_dir']} -mindepth 1 -maxdepth 1 -type d -printf '%f\\n' "
                   "2>/dev/null || true", vps_folders)


def paths_observer() -> Observe[frozenset[str]]:
    """The VPSes the Pi has a path to now, read with a step's other facts."""
    return Observe(VPS_FOLDERS, lambda found: ", ".join(sorted(found)) or "none", title="the Pi's paths (a folder per VPS)")


@dataclass(frozen=True)
class Tunneled:
    """What the tunnel step did: the VPSes whose path changed (or would), and what it read of the Pi while
    that still holds (nothing changed, nothing left pending), the passwords step's facts with it."""

    changed: set[str]
    facts: Facts | None


def tunnel(play: Play, remote: Remote, base: PiBase, host_keys: dict[str, tuple[str, ...]]) -> Tunneled:
    """The Pi's tunnel to each VPS in `host_keys` (its VPSes that answered), pinning that VPS's host keys; a
    path whose VPS did not answer is left as it is; a VPS the Pi no longer names loses its instance. The Pi's
    paths (and, where the inventory turns passwords off, that step's file) are read with the facts of the ops,
    in one round trip: a rerun that changes nothing costs that one read."""
    inv = play.inventory
    pi = inv.pis[remote.name]
    paths = {v: path_ops(pi, inv.vps[v], list(keys)) for v, keys in host_keys.items()}
    folders = paths_observer()
    shared = template_ops(pi)
    own = [*(op for v in pi.all_vps if v in paths for op in paths[v]), *loopback_ops(pi, penalties=base.penalties)]
    known = facts_for(remote, [folders, *shared, *own, *(password_ops() if pi.disable_password_login else ())])
    retired = sorted(known.value(VPS_FOLDERS) - set(pi.all_vps))
    ops = [folders, *shared, *(op for v in retired for op in retired_path_ops(v)), *own]
    # a retired path's facts were not read: then the converge reads the host again (it changes it anyway)
    done = converge(remote, ops, play.reporter, play.options.mode, handlers(remote, vpses=pi.all_vps),
                    known=None if retired else known)
    riding = restart(getattr(remote, "gateway_name", "-"))[0]
    if remote.through_tunnel and not play.options.check and any(
            done.changes(op) for op in ops if riding in op.notify):
        play.reporter.note(pi.name, f"its tunnel restarts in {PI_DEFAULTS['restart_under_us_after']}s, and with it this "
                                    "connection: reconnecting through the new tunnel")
        remote.path_restarts(PI_DEFAULTS["restart_under_us_after"] + 1, within=PI_DEFAULTS["listen_wait_seconds"])
    still = not retired and not done.changed and not pending_changes(known)
    return Tunneled({v for v, path in paths.items() if any(done.changes(op) for op in path)}, known if still else None)


def passwords_off(play: Play, remote: Remote, known: Facts | None = None) -> None:
    """Password login off, once a fresh key login is proven. `known`: the Pi as the tunnel step read it, when
    nothing changed since (then this step costs no read of its own)."""
    if not play.options.check and not remote.can_log_in_fresh(use_password=False, within=0):
        play.reporter.line(remote.name, "failed", "sshd: passwords off",
                           "key login is not proven, so password login stays on")
        raise StepFailed("key login not proven")
    converge(remote, password_ops(), play.reporter, play.options.mode, handlers(remote, "passwords"), known=known)


def teardown_ops(inv: Inventory, pi: PiSpec, *, purge: bool, present: tuple[str, ...] = (),
                 riding: str | None = None) -> list[Op]:
    """Undo provision-pi: every path's instance (those the inventory names and those `present` on the Pi),
    the template units, the single-VPS units of earlier versions, the files. `riding`: the VPS whose tunnel
    this run's connection comes through (away from home): that instance and the tunnel account go a moment
    after the run leaves, by the Pi's own timer (ops.Later)."""
    def stop(op: Op) -> Op:
        return Later(op) if riding is not None else op

    gone = [stop(Service(which(v), enabled=False, running=False, title=f"{v}: service {which(v)} stopped and disabled"))
            if v == riding and which is unit else
            Service(which(v), enabled=False, running=False, title=f"{v}: service {which(v)} stopped and disabled")
            for v in dict.fromkeys([*pi.all_vps, *present]) for which in (unit, watchdog_unit)]
    ops: list[Op] = [
        *gone,
        Service(PI_DEFAULTS["legacy_unit"], enabled=False, running=False, title=f"service {PI_DEFAULTS['legacy_unit']} stopped and disabled"),
        Service(PI_DEFAULTS["legacy_watchdog_unit"], enabled=False, running=False, title="single-VPS watchdog stopped and disabled"),
        Service(PI_DEFAULTS["watchdog_timer"], enabled=False, running=False, title="old watchdog timer stopped and disabled"),
        *(Absent(f"/etc/systemd/system/{name}", notify=("daemon-reload",))
          for name in (PI_DEFAULTS["watchdog_timer"], PI_DEFAULTS["watchdog_unit"], PI_DEFAULTS["legacy_watchdog_unit"], PI_DEFAULTS["legacy_unit"])),
        Absent(PI_DEFAULTS["watchdog_path"].rsplit("/", 1)[0]),
        stop(Absent(PI_DEFAULTS["unit_path"], notify=("daemon-reload",))),  # the riding instance's own unit file
        Absent(PI_DEFAULTS["config_dir"]),
        Absent(PI_DEFAULTS["password_dropin"], notify=("reload sshd",)),
        Absent(PI_DEFAULTS["loopback_dropin"], notify=("reload sshd",)),
    ]
    if pi.tunnel_user != pi.user:
        ops.append(stop(UserAbsent(pi.tunnel_user)))  # its processes are the tunnel's: after the unit
    else:
        ops += [Absent(key_path(pi) + suffix) for suffix in ("", ".pub", ".next", ".next.pub", ".old", ".old.pub")]
    if purge:
        ops.append(PackagesAbsent((PI_DEFAULTS["autossh_package"],)))
    return ops


def laptop_key_removal(pi: PiSpec) -> Op:
    return File(f"{home_of(pi.user)}/.ssh/authorized_keys", managed_lines(PI_DEFAULTS["laptop_key_marker"], {"": None}),
                owner=pi.user, group=pi.user, mode=0o600, notify=("reload sshd",), title="laptop's key removed",
                create=False)


def another_way_in(inv: Inventory, pi: PiSpec, remote: Remote) -> bool:
    """Whether pitunnel knows a login to this Pi that does not need the laptop's key: the login password,
    or a login key of the inventory's that is not the laptop's."""
    laptop = inv.settings.laptop_key
    own_key = pi.key is not None and laptop is not None and pi.key.resolve() != laptop.resolve()
    return bool(remote.credentials.login_password) or own_key


KEPT_LAPTOP_KEY = ("kept the laptop's key (the line marked {marker} in ~{user}/.ssh/authorized_keys): it is the only "
                   "login pitunnel knows to this Pi, and without it you could be locked out. Remove that line by "
                   "hand once you have another way in, or run teardown again with the login password "
                   "(password_file, or --prompt-for-login-password)")


def teardown(play: Play, *, purge: bool) -> None:
    """Undo provision-pi on every selected Pi (roles/site.py takes their keys off their VPS). The laptop's key
    goes last, on its own, and only when pitunnel knows another way in; else it stays, with a warning."""
    inv = play.inventory
    pis = play.selected(list(inv.pis.values()))

    def undo(remote: Remote) -> None:
        pi = inv.pis[remote.name]
        remote.connection()  # a Pi with via: auto chooses its path now
        riding = getattr(remote, "gateway_name", None) if remote.through_tunnel else None
        folders = paths_observer()
        ops = [folders, *teardown_ops(inv, pi, purge=purge, riding=riding)]
        known = facts_for(remote, ops)
        found: frozenset[str] = known.value(VPS_FOLDERS)
        others = tuple(sorted(found - set(pi.all_vps)))
        if others:  # paths to VPSes the inventory no longer names: their facts were not read, so read again
            ops = [folders, *teardown_ops(inv, pi, purge=purge, present=others, riding=riding)]
        converge(remote, ops, play.reporter, play.options.mode, handlers(remote, "teardown"),
                 known=None if others else known)
        if inv.settings.laptop_key is not None:
            if another_way_in(inv, pi, remote):
                converge(remote, [laptop_key_removal(pi)], play.reporter, play.options.mode,
                         handlers(remote, "teardown"))
            else:
                play.reporter.warn(remote.name, KEPT_LAPTOP_KEY.format(marker=PI_DEFAULTS["laptop_key_marker"], user=pi.user))
        if riding is not None and not play.options.check:
            # a tunnel stopped while its VPS drops the session may end "failed": forget that state too
            remote.run(arm_later(PI_DEFAULTS["restart_under_us_after"], then=f"systemctl reset-failed {unit(riding)} || true"))
            play.reporter.note(remote.name, f"reached through its tunnel to {riding}, which stops "
                                            f"{PI_DEFAULTS['restart_under_us_after']}s after this run leaves the Pi: pitunnel "
                                            "cannot watch that last step (`pitunnel status` shows the tunnel gone)")

    play.each(pis, undo)
