"""What a Pi must look like: autossh, a tunnel account with a key made on the Pi, the VPS host key
pinned, a keepalive ssh config for the VPS entry only, and a systemd unit that keeps the tunnel up."""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from functools import partial

from pitunnel.facts import Fact, command_fact
from pitunnel.inventory import Inventory, PiSpec, VpsSpec
from pitunnel.ops import (Absent, Directory, File, Handler, KeyPair, Observe, Op, Packages, PackagesAbsent,
                          Service, SystemUser, UserAbsent, managed_lines)
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.report import Reporter
from pitunnel.role import Role
from pitunnel.runner import StepFailed, converge, facts_for
from pitunnel.shared import SharedReading
from pitunnel.sshkeys import BadPublicKey, parse_public_key
from roles.vps.steps import authorized_keys, listen_spec

ROLE = Role("pi")
D = ROLE.defaults


def home_of(user: str) -> str:
    return "/root" if user == "root" else f"/home/{user}"


def tunnel_home(pi: PiSpec) -> str:
    return home_of(pi.user) if pi.tunnel_user == pi.user else D["tunnel_home"]


def key_path(pi: PiSpec) -> str:
    return f"{tunnel_home(pi)}/.ssh/{D['key_name']}"


def forwards(pi: PiSpec) -> list[str]:
    """Every -R of this Pi: listen where the inventory says, forward to the Pi's own port."""
    return [f"{listen_spec(t)}:127.0.0.1:{t.local_port}" for t in pi.tunnels]


def laptop_key_line(inv: Inventory) -> str | None:
    if inv.settings.laptop_key is None:
        return None
    keytype, blob = inv.settings.laptop_key.with_name(inv.settings.laptop_key.name + ".pub").read_text().split()[:2]
    return f"{keytype} {blob} {D['laptop_key_marker']}"


PENALTIES = command_fact("sshd-penalties", "sshd -T 2>/dev/null | grep -ci '^persourcepenalties ' || true")


def has_penalties(fact_output: str) -> bool:
    return fact_output.strip() not in ("", "0")


def penalties_observer() -> Observe:
    """Does this Pi's sshd have per-source penalties (OpenSSH 9.8 and later)?"""
    return Observe(PENALTIES, lambda v: "yes" if has_penalties(v) else "no (older OpenSSH)",
                   title="sshd has per-source penalties")


def sshd_passwords_fact(pi: PiSpec) -> Fact:
    """The Pi's effective password settings for its login user, as a connection through a tunnel gets
    them (from 127.0.0.1): `sshd -T` is the truth, whatever drop-in (cloud-init's, ours) set them."""
    spec = shlex.quote(f"user={pi.user},host=localhost,addr=127.0.0.1")
    return command_fact("sshd-passwords-loopback", f"sshd -T -C {spec} "
                        "2>/dev/null | grep -iE '^(passwordauthentication|kbdinteractiveauthentication) ' || true")


def passwords_on(fact_output: str) -> bool | None:
    """True if sshd lets a password in (directly or by keyboard-interactive), None if it could not tell."""
    settings = dict(line.lower().split(None, 1) for line in fact_output.splitlines() if len(line.split()) == 2)
    if "passwordauthentication" not in settings:
        return None
    return "yes" in (settings.get("passwordauthentication"), settings.get("kbdinteractiveauthentication"))


def public_ssh_ports(pi: PiSpec) -> list[int]:
    return [t.remote_port for t in pi.tunnels if t.kind == "ssh" and t.public]


def password_warning(pi: PiSpec, vps: VpsSpec, on: bool | None) -> str | None:
    """Password login on a Pi whose sshd is public through the VPS: anyone may guess, and everything through
    the tunnel comes from 127.0.0.1, which sshd's penalties exempt (and fail2ban cannot tell apart)."""
    ports = public_ssh_ports(pi)
    if not ports or on is False or pi.disable_password_login:  # with it, provision-pi turns them off after keys work
        return None
    where = ", ".join(f"{vps.address}:{p}" for p in ports)
    state = "accepts passwords" if on else "may accept passwords (sshd -T could not be read)"
    return (f"{pi.name}'s sshd is public at {where} and {state}: anyone can guess them, from "
            f"127.0.0.1 as far as the Pi can tell; set `disable_password_login: true` for {pi.name} once key login works")


def passwords_observer(pi: PiSpec, vps: VpsSpec) -> Observe:
    def describe(value: str) -> str:
        on = passwords_on(value)
        if password_warning(pi, vps, on):
            return "on, with a public ssh tunnel (see the WARNING)"
        if on is False:
            return "off (sshd -T)"
        return "on, turned off once key login works (disable_password_login)" if pi.disable_password_login else \
            f"{'on' if on else 'unknown'} (no public ssh tunnel)"
    return Observe(sshd_passwords_fact(pi), describe, title="sshd password login (effective, via the tunnel)")


def refuse_bad_pubkey(reporter: Reporter, pi: PiSpec, key: KeyPair, text: str) -> str:
    """The Pi's reported public key, or a failure for this Pi alone: a key that does not parse is never
    sent to the VPS's authorized_keys."""
    try:
        return parse_public_key(text).line + f" {key.comment}"
    except BadPublicKey as exc:
        reporter.line(pi.name, "failed", key.title,
                      f"{key.path}.pub is not a public key ({exc}); it is not sent to the VPS. Fix: on {pi.name}, "
                      f"rm {key.path}.pub and rerun: provisioning derives it again from the private key")
        raise StepFailed("bad public key") from None


def _is_key(text: str) -> bool:
    try:
        parse_public_key(text)
    except BadPublicKey:
        return False
    return True


def base_ops(inv: Inventory, pi: PiSpec) -> tuple[list[Op], KeyPair]:
    home = tunnel_home(pi)
    key = KeyPair(key_path(pi), owner=pi.tunnel_user, comment=f"pitunnel:{pi.name}", title="tunnel key (made on the Pi)")
    ops: list[Op] = [Packages((D["autossh_package"],))]
    if pi.tunnel_user != pi.user:
        ops.append(SystemUser(pi.tunnel_user, home=home, comment="pitunnel reverse tunnel"))
    ops.append(key)
    line = laptop_key_line(inv)
    if line is not None:
        ssh_dir = f"{home_of(pi.user)}/.ssh"
        ops += [Directory(ssh_dir, owner=pi.user, group=pi.user, mode=0o700),
                File(f"{ssh_dir}/authorized_keys", managed_lines(D["laptop_key_marker"], {"": line}),
                     owner=pi.user, group=pi.user, mode=0o600, title="laptop's key for passwordless login")]
    return ops, key


def loopback_ops(pi: PiSpec, *, penalties: bool) -> list[Op]:
    """Everything that reaches the Pi's sshd through a tunnel comes from 127.0.0.1, where the tunnel's
    ssh connects from. sshd's per-source penalties would count every scanner knocking on the public
    tunnel port against that one address, then refuse everyone coming through the tunnel, the
    owner too (measured: 20 s of refusals after a burst of 200 connections). Exempt loopback."""
    if not penalties or not any(t.kind == "ssh" for t in pi.tunnels):
        return []
    return [File(D["loopback_dropin"], ROLE.render("sshd-loopback.conf.j2"), validate="sshd -t",
                 notify=("reload sshd",), title="sshd: no per-source penalties for tunnel traffic (loopback)")]


def tunnel_ops(inv: Inventory, pi: PiSpec, vps: VpsSpec, vps_host_keys: list[str]) -> list[Op]:
    name = vps.address if vps.port == 22 else f"[{vps.address}]:{vps.port}"
    known = "".join(f"{name} {k}\n" for k in vps_host_keys)
    context = dict(pi=pi.name, vps=vps.name, vps_address=vps.address, vps_port=vps.port,
                   vps_tunnel_user=vps.tunnel_user, key_path=key_path(pi), tunnel_user=pi.tunnel_user,
                   tunnel_home=tunnel_home(pi), server_alive_interval=pi.server_alive_interval,
                   server_alive_count_max=pi.server_alive_count_max, forwards=forwards(pi),
                   connect_timeout=D["tunnel_connect_timeout"], route_proto=D["route_proto"])
    restart = ("restart tunnel",)
    watchdog = ("restart watchdog",)
    return [
        Directory(D["config_dir"]),
        File(f"{D['config_dir']}/known_hosts", known, notify=restart, title="VPS host key pinned for the tunnel"),
        File(f"{D['config_dir']}/ssh_config", ROLE.render("ssh_config.j2", **context), notify=restart,
             title="tunnel ssh config (keepalives for the VPS entry only)"),
        File(D["unit_path"], ROLE.render("pitunnel.service.j2", **context), notify=restart,
             title=f"systemd unit {D['unit']}"),
        Service(D["unit"], covers=restart),
        # the watchdog ran from a timer before it became a service that waits for network events
        Service(D["watchdog_timer"], enabled=False, running=False, title="old watchdog timer retired"),
        Absent(f"/etc/systemd/system/{D['watchdog_timer']}", notify=watchdog),
        File(D["watchdog_path"], ROLE.render("watchdog.sh.j2", hang_after_ms=hang_after_ms(pi),
                                             stale_after_ms=stale_after_ms(pi, vps), check_every=D["watchdog_every"],
                                             **context),
             mode=0o755, notify=watchdog, title="watchdog: network back, a hung tunnel ssh, quick ACKs to the VPS"),
        File(f"/etc/systemd/system/{D['watchdog_unit']}", ROLE.render("watchdog.service.j2", **context),
             notify=watchdog, title=f"systemd unit {D['watchdog_unit']}"),
        Service(D["watchdog_unit"], covers=watchdog),
    ]


def hang_after_ms(pi: PiSpec) -> int:
    """Silence after which a tunnel ssh counts as hung: its own keepalive window, plus slack."""
    return (pi.server_alive_interval * (pi.server_alive_count_max + 1) + 5) * 1000


def stale_after_ms(pi: PiSpec, vps: VpsSpec) -> int:
    """Time without a word from the VPS after which a connection counts as dead once the network is
    back. A live one hears from the VPS at least this often even when idle: the VPS's client-alive
    probe, or its answer to the Pi's own keepalive, whichever comes first; plus slack."""
    return (min(vps.client_alive_interval, pi.server_alive_interval) + 3) * 1000


def tunnel_handlers(remote: Remote) -> list[Handler]:
    return [Handler("restart tunnel", ["systemctl daemon-reload", f"systemctl restart {D['unit']}"]),
            Handler("restart watchdog", ["systemctl daemon-reload", f"systemctl restart {D['watchdog_unit']}"]),
            Handler("reload sshd", ["sshd -t", f"systemctl reload {D['ssh_service']}"],
                    verify=lambda: remote.can_log_in_fresh(),
                    verify_hint="a fresh login failed after changing sshd's settings")]


def password_ops(remote: Remote) -> tuple[list[Op], list[Handler]]:
    ops: list[Op] = [File(D["password_dropin"], "# Managed by pitunnel: key login was proven first.\n"
                          "PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                          validate="sshd -t", notify=("reload sshd",), title="sshd: passwords off")]
    handlers = [Handler("reload sshd", ["sshd -t", f"systemctl reload {D['ssh_service']}"],
                        verify=lambda: remote.can_log_in_fresh(use_password=False),
                        verify_hint="a fresh key login failed after turning passwords off")]
    return ops, handlers


def listening(ss_output: str, pis: list[PiSpec]) -> dict[str, list[str]]:
    """For each Pi, its forwards NOT listening on the VPS according to `ss -Htln`."""
    present = {line.split()[3] for line in ss_output.splitlines() if len(line.split()) >= 4}
    return {pi.name: [listen_spec(t) for t in pi.tunnels if listen_spec(t) not in present] for pi in pis}


SS = command_fact("ss-listen", "ss -Htln")
HOST_KEYS = command_fact("vps-host-keys", "cat /etc/ssh/ssh_host_*_key.pub 2>/dev/null | awk '{print $1, $2}'")


@dataclass
class Based:
    """What the base step learnt from the Pis, for the rest of provision-pi."""

    pis: list[PiSpec]
    pubkeys: dict[str, str] = field(default_factory=dict)  # Pis whose tunnel key exists (or would)
    penalties: dict[str, bool] = field(default_factory=dict)


def provision(play: Play) -> None:
    """`invoke provision-pi`: base on every Pi, the Pis' keys on their VPS, then each Pi's tunnel."""
    finish(play, base(play))


def base(play: Play) -> Based:
    """On every selected Pi: autossh, the tunnel account, its key made on the Pi, the laptop's key. Needs
    nothing from the VPS, so `invoke provision` runs it while the VPS converges."""
    inv, mode, reporter = play.inventory, play.options.mode, play.reporter
    based = Based(play.selected(list(inv.pis.values())))

    def one(remote: Remote) -> None:
        pi = inv.pis[remote.name]
        ops, key = base_ops(inv, pi)
        observer = penalties_observer()
        passwords = passwords_observer(pi, inv.vps_of(pi))
        everything = [*ops, observer, passwords]
        known = facts_for(remote, everything)
        found = known[f"key:{key.path}"][1].strip()
        if found == "PUB" or found.startswith("PUB "):  # the .pub exists: whatever it holds must be a key
            refuse_bad_pubkey(reporter, pi, key, found[4:])
        plans = dict((id(op), p) for op, p in converge(remote, everything, reporter, mode, known=known))
        based.penalties[pi.name] = has_penalties(observer.value)
        warning = password_warning(pi, inv.vps_of(pi), passwords_on(passwords.value))
        if warning:
            reporter.warn(pi.name, warning)
        if not plans[id(key)].changes:
            based.pubkeys[pi.name] = refuse_bad_pubkey(reporter, pi, key, key.value)
        elif not mode.check:
            based.pubkeys[pi.name] = refuse_bad_pubkey(reporter, pi, key, remote.run(f"cat {key.path}.pub").stdout)

    play.each(based.pis, one)
    return based


def finish(play: Play, based: Based) -> None:
    """The Pis' keys on their VPS, then each Pi's tunnel, up and listening on the VPS."""
    inv, mode, reporter = play.inventory, play.options.mode, play.reporter
    pis, pubkeys, penalties = based.pis, based.pubkeys, based.penalties
    vps_keys: dict[str, list[str]] = {}
    vps_ss: dict[str, str] = {}

    def on_vps(remote: Remote) -> None:
        vps = inv.vps[remote.name]
        mine = [p for p in pis if p.vps == vps.name and not reporter.recap(p.name).bad]
        account = Observe(command_fact("tunnel-account", f"getent passwd {vps.tunnel_user} || echo MISSING"),
                          lambda v: "missing" if "MISSING" in v else "present", title=f"tunnel account {vps.tunnel_user}")
        keys = Observe(HOST_KEYS, lambda v: f"{len(v.splitlines())} host keys read", title="VPS host keys")
        ss = Observe(SS, lambda v: "read", title="listeners on the VPS")
        permitted = Observe(command_fact("permitlisten", f"sshd -T -C user={vps.tunnel_user},host=pitunnel,addr=192.0.2.1 "
                                         "2>/dev/null | grep -i '^permitlisten ' || true"),
                            lambda v: "read", title="listeners sshd permits the tunnel account")
        # only keys that parsed on the Pi's side reach this VPS (base refused the others, each for its Pi alone)
        new = {p.name: pubkeys[p.name] for p in mine if p.name in pubkeys and _is_key(pubkeys[p.name])}
        keys_op = authorized_keys(inv, vps, new)
        # one read of the VPS for the checks below and for the keys: a rerun that changes nothing costs
        # one round trip here, not two
        known = facts_for(remote, [account, keys, ss, permitted, keys_op])
        converge(remote, [account, keys, ss, permitted], reporter, mode, known=known)
        allowed = set(permitted.value.split()[1:])
        unknown = [f"{p.name}: {listen_spec(t)}" for p in mine for t in p.tunnels if listen_spec(t) not in allowed]
        if unknown and "MISSING" not in account.value:
            reporter.line(remote.name, "skipped" if mode.check else "failed", "sshd permits the Pis' listeners",
                          f"not yet: {', '.join(unknown)}; run `invoke provision-vps` (or `invoke provision`) first")
            if not mode.check:
                raise StepFailed("PermitListen behind the inventory")
        vps_keys[vps.name] = [k for k in keys.value.splitlines() if k.strip()]
        vps_ss[vps.name] = ss.value
        if "MISSING" in account.value:
            if mode.check:
                reporter.line(remote.name, "skipped", "authorized keys of the Pis",
                              f"{vps.tunnel_user} is not there yet (provision-vps would create it)")
                return
            reporter.line(remote.name, "failed", "tunnel account", f"{vps.tunnel_user} does not exist: run "
                          "`invoke provision-vps` first")
            del vps_keys[vps.name]
            raise StepFailed("no tunnel account")
        converge(remote, [keys_op], reporter, mode, known=known)

    play.each(vpses_of(inv, pis), on_vps)
    # the Pis wait for their listeners on one VPS connection: they share its `ss` readings
    listeners = {v.name: SharedReading(partial(_listeners, play.remotes[v.name])) for v in vpses_of(inv, pis)}

    def tunnel(remote: Remote) -> None:
        pi = inv.pis[remote.name]
        vps = inv.vps_of(pi)
        if vps.name not in vps_keys:
            reporter.line(pi.name, "skipped", "tunnel", f"its VPS {vps.name} step failed")
            return
        ops = [*tunnel_ops(inv, pi, vps, vps_keys[vps.name]), *loopback_ops(pi, penalties=penalties.get(pi.name, False))]
        plans = converge(remote, ops, reporter, mode, tunnel_handlers(remote))
        changed = any(p.changes for _, p in plans)
        if not mode.check:
            _wait_listening(play, pi, listeners[vps.name], vps_ss[vps.name] if not changed else "")
        if pi.disable_password_login:
            _passwords_off(play, remote)

    play.each([p for p in pis if p.name in pubkeys or mode.check], tunnel)


def _listeners(vps: Remote) -> str:
    return vps.run(SS.script).stdout


def _wait_listening(play: Play, pi: PiSpec, listeners: SharedReading, ss_now: str) -> None:
    """The run is done only when the VPS really listens on every forward of this Pi."""
    missing = listening(ss_now, [pi])[pi.name] if ss_now else [listen_spec(t) for t in pi.tunnels]
    started = looked = time.monotonic()
    deadline = started + D["listen_wait_seconds"]
    while missing and time.monotonic() < deadline:
        time.sleep(0.5)
        # any reading that began since this Pi last looked will do: one ss serves every Pi waiting
        reading, looked = listeners.newer_than(looked), time.monotonic()
        missing = listening(reading, [pi])[pi.name]
    if missing:
        play.reporter.line(pi.name, "failed", "tunnel listening on the VPS",
                           f"not listening after {D['listen_wait_seconds']}s: {', '.join(missing)} "
                           f"(see `journalctl -u {D['unit']}` on the Pi)")
        raise StepFailed("not listening")
    waited = time.monotonic() - started
    play.reporter.line(pi.name, "ok", "tunnel listening on the VPS",
                       f"{', '.join(listen_spec(t) for t in pi.tunnels)}" + (f" (after {waited:.1f}s)" if waited > 0.1 else ""))


def _passwords_off(play: Play, remote: Remote) -> None:
    if play.options.check:
        ops, handlers = password_ops(remote)
        converge(remote, ops, play.reporter, play.options.mode, handlers)
        return
    if not remote.can_log_in_fresh(use_password=False, within=0):
        play.reporter.line(remote.name, "failed", "sshd: passwords off",
                           "key login is not proven, so password login stays on")
        raise StepFailed("key login not proven")
    ops, handlers = password_ops(remote)
    converge(remote, ops, play.reporter, play.options.mode, handlers)


def vpses_of(inv: Inventory, pis: list[PiSpec]) -> list[VpsSpec]:
    return list({inv.vps_of(p).name: inv.vps_of(p) for p in pis}.values())


def teardown_ops(inv: Inventory, pi: PiSpec, *, purge: bool) -> list[Op]:
    ops: list[Op] = [
        Service(D["unit"], enabled=False, running=False, title=f"service {D['unit']} stopped and disabled"),
        Service(D["watchdog_unit"], enabled=False, running=False, title="watchdog stopped and disabled"),
        Service(D["watchdog_timer"], enabled=False, running=False, title="old watchdog timer stopped and disabled"),
        Absent(f"/etc/systemd/system/{D['watchdog_timer']}", notify=("daemon-reload",)),
        Absent(f"/etc/systemd/system/{D['watchdog_unit']}", notify=("daemon-reload",)),
        Absent(D["watchdog_path"].rsplit("/", 1)[0]),
        Absent(D["unit_path"], notify=("daemon-reload",)),
        Absent(D["config_dir"]),
        Absent(D["password_dropin"], notify=("reload sshd",)),
        Absent(D["loopback_dropin"], notify=("reload sshd",)),
    ]
    if pi.tunnel_user != pi.user:
        ops.append(UserAbsent(pi.tunnel_user))
    else:
        ops += [Absent(key_path(pi)), Absent(key_path(pi) + ".pub")]
    if inv.settings.laptop_key is not None:
        ops.append(File(f"{home_of(pi.user)}/.ssh/authorized_keys", managed_lines(D["laptop_key_marker"], {"": None}),
                        owner=pi.user, group=pi.user, mode=0o600, notify=("reload sshd",), title="laptop's key removed"))
    if purge:
        ops.append(PackagesAbsent((D["autossh_package"],)))
    return ops


def teardown(play: Play, *, purge: bool) -> None:
    """Undo provision-pi on every selected Pi, and take their keys off their VPS."""
    inv = play.inventory
    pis = play.selected(list(inv.pis.values()))

    def handlers(remote: Remote) -> list[Handler]:
        # guarded like provisioning's: proven by a fresh login, else rolled back (the laptop's key too)
        return [Handler("daemon-reload", ["systemctl daemon-reload"]),
                Handler("reload sshd", ["sshd -t", f"systemctl reload {D['ssh_service']}"],
                        verify=lambda: remote.can_log_in_fresh(),
                        verify_hint="a fresh login failed after teardown's sshd changes (without the laptop's "
                                    "key, pitunnel logs in with the login password: password_file or -p)")]

    play.each(pis, lambda remote: converge(remote, teardown_ops(inv, inv.pis[remote.name], purge=purge),
                                           play.reporter, play.options.mode, handlers(remote)))
    gone = frozenset(p.name for p in pis)

    def unauthorise(remote: Remote) -> None:
        vps = inv.vps[remote.name]
        if play.options.limit and vps.name in play.options.limit:
            return  # the VPS's own teardown removes the whole account
        account = Observe(command_fact("tunnel-account", f"getent passwd {vps.tunnel_user} || echo MISSING"),
                          lambda v: "missing" if "MISSING" in v else "present", title=f"tunnel account {vps.tunnel_user}")
        converge(remote, [account], play.reporter, play.options.mode)
        if "MISSING" not in account.value:
            converge(remote, [authorized_keys(inv, vps, {}, drop=gone)], play.reporter, play.options.mode)

    if play.options.limit:
        play.each(vpses_of(inv, pis), unauthorise)
