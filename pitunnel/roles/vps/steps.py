"""The VPS role's steps: what a VPS must look like (the tunnel account, its sshd Match block, the Pis' keys,
Nginx, metrics), composed from the modules beside this one, and the steps that converge or undo it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pitunnel.facts import LISTENERS, Fact, read
from pitunnel.inventory import Inventory, Listener, VpsSpec
from pitunnel.inventory.model import EVERY_ADDRESS, LOOPBACK
from pitunnel.ops import (Absent, Directory, File, Handler, Observe, Op, Packages, PackagesAbsent, Service,
                          SystemUser, UserAbsent, q)
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.report import Reporter
from pitunnel.runner import Mode, StepFailed, converge, facts_for, sshd_reload
from pitunnel.roles.contract import PiOffer, VpsFacts
from pitunnel.roles.vps.acme import AcmeFound, Certificate, CertificatesReleased, FolderGone, acme_fact
from pitunnel.roles.vps.capacity import MEMORY, memory_observer, over_capacity, sessions_on
from pitunnel.roles.vps.checks import SshdPasswordsCheck
from pitunnel.roles.vps.firewall_ops import FirewallClosed, FirewallOpen, apply_handler
from pitunnel.roles.vps.keys import HOST_KEYS
from pitunnel.roles.vps.authorized import bootstrap_lines, keys_ops, keys_path, refuse_shared, revoked_keys_file, revoked_lines, shared_keys
from pitunnel.roles.vps.metrics import metrics_absent_ops, metrics_ops
from pitunnel.roles.vps.nginx import (DEFAULT_SERVERS_FACT, default_server_note, http_routes, nginx_absent_ops, nginx_ops,
                                      others_default_servers, route_vars, served_tls)
from pitunnel.roles.vps.role import VPS_DEFAULTS, ROLE
from pitunnel.roles.vps.statuspage import certificates as served_certificates, page_vars, status_page_absent_ops, status_page_ops


def account_observer(vps: VpsSpec) -> Observe[bool]:
    """Is the tunnel account there?"""
    fact = Fact("tunnel-account", f"getent passwd {q(vps.tunnel_user)} || echo MISSING", lambda out: "MISSING" not in out)
    return Observe(fact, lambda there: "present" if there else "missing", title=f"tunnel account {vps.tunnel_user}")


def permitted_fact(vps: VpsSpec) -> Fact[frozenset[str]]:
    """The listeners sshd permits the tunnel account (its effective PermitListen)."""
    return Fact("permitlisten", f"sshd -T -C {q(f'user={vps.tunnel_user},host=pitunnel,addr=192.0.2.1')} "
                "2>/dev/null | grep -i '^permitlisten ' || true", lambda out: frozenset(out.split()[1:]))


def permits(allowed: frozenset[str], listener: Listener) -> bool:
    """Whether sshd's effective PermitListen (`allowed`, as `sshd -T` prints it) lets the tunnel account listen
    there as pitunnel's Match block permits it: its address with any port (an older pitunnel: the listener
    itself). Not `any`: that is what sshd says without pitunnel's Match block, so provision-vps is not done."""
    return bool({listener.spec, f"{listener.host}:*"} & allowed)


def listeners(remote: Remote) -> frozenset[str]:
    """What listens on this VPS now (one round trip)."""
    return read(remote, LISTENERS)


def authorise(remote: Remote, inv: Inventory, vps: VpsSpec, offers: Sequence[PiOffer], reporter: Reporter,
              mode: Mode) -> VpsFacts:
    """For provision-pi: the keys the Pis offer in the tunnel account's authorized_keys, once sshd permits
    their listeners; returns what the Pis need of this VPS. Raises StepFailed."""
    account = account_observer(vps)
    keys = Observe(HOST_KEYS, lambda v: f"{len(v.current)} host keys read", title="VPS host keys")
    ss = Observe(LISTENERS, lambda v: "read", title="listeners on the VPS")
    permitted = Observe(permitted_fact(vps), lambda v: "read", title="listeners sshd permits the tunnel account")
    # each key was parsed where the Pi's base read it (a key that did not parse failed that Pi alone)
    new = {o.name: o.pubkey.line for o in offers if o.pubkey is not None}
    keys_op = keys_ops(inv, vps, new)
    # one read of the VPS for the checks below and for the keys: a rerun that changes nothing costs
    # one round trip here, not two
    known = facts_for(remote, [account, keys, ss, permitted, *keys_op])
    converge(remote, [account, keys, ss, permitted], reporter, mode, known=known)
    # a Pi offering a key another Pi holds or offers: refused alone (the other Pis' keys are written), so
    # that no Pi can hold up the others' provisioning with a copied key; docs/security.md
    refused = refuse_shared(reporter, remote.name, shared_keys(inv, vps, new, known.file(keys_path())))
    there, allowed = known.value(account.fact), known.value(permitted.fact)
    unknown = [f"{o.name}: {listener.spec}" for o in offers for listener in o.listens if not permits(allowed, listener)]
    if unknown and there:
        reporter.line(remote.name, "skipped" if mode.check else "failed", "sshd permits the Pis' listeners",
                      f"not yet: {', '.join(unknown)}; run `invoke provision-vps` (or `invoke provision`) first")
        if not mode.check:
            raise StepFailed("PermitListen behind the inventory")
    state = known.file(keys_path())
    booted = frozenset(bootstrap_lines(state.content.decode(errors="replace") if state.exists else ""))
    found = VpsFacts(known.value(HOST_KEYS).current, known.value(LISTENERS), refused, booted)
    if not there:
        if mode.check:
            reporter.line(remote.name, "skipped", "authorized keys of the Pis",
                          f"{vps.tunnel_user} is not there yet (provision-vps would create it)")
            return found
        reporter.line(remote.name, "failed", "tunnel account", f"{vps.tunnel_user} does not exist: run "
                      "`invoke provision-vps` first")
        raise StepFailed("no tunnel account")
    converge(remote, keys_op, reporter, mode, known=known)
    return found


def unauthorise(remote: Remote, inv: Inventory, vps: VpsSpec, gone: frozenset[str], reporter: Reporter,
                mode: Mode) -> None:
    """The keys of the Pis in `gone` off the tunnel account, and their live sessions ended, if it is there."""
    account = account_observer(vps)
    if converge(remote, [account], reporter, mode).facts.value(account.fact):
        converge(remote, keys_ops(inv, vps, {}, drop=gone), reporter, mode)


def unauthorise_bootstrap(remote: Remote, inv: Inventory, vps: VpsSpec, gone: Mapping[str, None], reporter: Reporter,
                          mode: Mode) -> None:
    """The bootstrap keys of the enrolled Pis in `gone` off the tunnel account (their own keys stay), and their
    live sessions ended."""
    converge(remote, keys_ops(inv, vps, {}, bootstrap=gone), reporter, mode)


def handlers(remote: Remote) -> list[Handler]:
    """The VPS role's handlers, for every step."""
    return [
        sshd_reload(remote, VPS_DEFAULTS["ssh_service"], "a fresh login failed after the sshd reload (this change would lock you out)"),
        Handler("restart reaper", ["systemctl daemon-reload", f"systemctl restart {VPS_DEFAULTS['reaper_unit']}"]),
        Handler("reload nginx", ["if [ -x /usr/sbin/nginx ]; then nginx -t 2>&1 && systemctl reload-or-restart nginx; fi"]),
        Handler("daemon-reload", ["systemctl daemon-reload"]),
        Handler("restart metrics", ["systemctl daemon-reload", f"systemctl restart {VPS_DEFAULTS['metrics_unit']}"]),
        Handler("restart node exporter", ["systemctl daemon-reload", f"systemctl restart {VPS_DEFAULTS['metrics_service']}"]),
        Handler("restart node exporter if there", [
            "systemctl daemon-reload",
            f"! systemctl cat {VPS_DEFAULTS['metrics_service']} >/dev/null 2>&1 || systemctl try-restart {VPS_DEFAULTS['metrics_service']}"]),
        apply_handler(remote),
    ]


def sshd_dropin(variables: dict[str, Any]) -> File:
    return File(VPS_DEFAULTS["sshd_dropin"], ROLE.render("sshd.conf.j2", **variables), validate="sshd -t",
                notify=("reload sshd",), title="sshd Match block for the tunnel account")


def permitted_listens(inv: Inventory, vps: VpsSpec) -> list[str]:
    """The listeners sshd permits the tunnel account: any port, on each address its Pis' tunnels listen on
    (loopback, and every address once a tunnel is public), the revoked Pis' still in the inventory too. Which
    port is whose is each key's own `permitlisten`. Not the list of every Pi's listeners: sshd reads that list
    again into every session at a cost that grows with its square (2.9 MB more per session at 600 listeners,
    docs/performance.md), and a new Pi would need provision-vps first."""
    every = {**inv.pis, **inv.shut}
    hosts = {t.listener.host for pi in every.values() if vps.name in pi.all_vps for t in pi.path(vps.name).tunnels}
    return [f"{host}:*" for host in (LOOPBACK, EVERY_ADDRESS) if host in hosts]


def context(inv: Inventory, vps: VpsSpec, *, claim_default: bool = True, certs: AcmeFound = AcmeFound(),
            reject_unknown: bool | None = None) -> dict[str, Any]:
    """The variables the VPS's templates are rendered with (the role's defaults under them), here and by
    the Ansible benchmark (benchmarks/ansible/inventory.py) alike. `certs`: the ACME certificates found on
    the VPS (a route serves HTTPS once its own is there). `reject_unknown`: whether, when the path-prefix
    server has no certificate, a default server on https_port refuses unknown names' handshakes (no default
    server of the user's is there; None: as claim_default)."""
    public = vps.public_name.lower().rstrip(".") if vps.public_name else None
    return dict(tunnel_user=vps.tunnel_user, listens=permitted_listens(inv, vps),
                client_alive_interval=vps.client_alive_interval, client_alive_count_max=vps.client_alive_count_max,
                http_port=vps.http_port, https_port=vps.https_port, tls_certificate=vps.tls_certificate,
                tls_key=vps.tls_key, claim_default=claim_default, public_name=public, acme=vps.acme is not None,
                reject_unknown=claim_default if reject_unknown is None else reject_unknown,
                site_tls=served_tls(vps, public if vps.acme else None, certs),
                revoked_keys=VPS_DEFAULTS["revoked_keys"] if revoked_lines(inv) else None,
                tunnels=[route_vars(r, vps, certs) for r in http_routes(inv, vps)], status_page=page_vars(vps))


def acme_names(inv: Inventory, vps: VpsSpec) -> list[str]:
    """The names this VPS gets ACME certificates for, in inventory order."""
    return list(dict.fromkeys(r.acme_name for r in http_routes(inv, vps) if r.acme_name))


def acme_ops(vps: VpsSpec) -> list[Op]:
    """What certbot needs on a VPS with `acme:`: the challenge folder Nginx serves, and the CA bundle for
    the directory's TLS (for pitunnel's certbot runs and the timer's renewals alike)."""
    if vps.acme is None:
        return []
    ops: list[Op] = [Directory(VPS_DEFAULTS["acme_webroot"])]
    if vps.acme.ca_bundle is not None:
        ops += [Directory(VPS_DEFAULTS["acme_ca_bundle"].rsplit("/", 1)[0]),
                File(VPS_DEFAULTS["acme_ca_bundle"], vps.acme.ca_bundle.read_text(), title="CA bundle for the ACME directory"),
                File(VPS_DEFAULTS["certbot_dropin"], f"# Managed by pitunnel: certbot trusts the ACME directory's CA (acme.ca_bundle)\n"
                     f"[Service]\nEnvironment=REQUESTS_CA_BUNDLE={VPS_DEFAULTS['acme_ca_bundle']}\n",
                     notify=("daemon-reload",), title="certbot renewals trust the ACME directory's CA")]
    return ops


def converge_ops(inv: Inventory, vps: VpsSpec, *, claim_default: bool = True, certs: AcmeFound = AcmeFound(),
                 reject_unknown: bool | None = None) -> list[Op]:
    variables = context(inv, vps, claim_default=claim_default, certs=certs, reject_unknown=reject_unknown)
    routes = http_routes(inv, vps)
    ops: list[Op] = [
        SystemUser(vps.tunnel_user, home=VPS_DEFAULTS["tunnel_home"], comment="pitunnel reverse tunnels"),
        Directory(f"{VPS_DEFAULTS['tunnel_home']}/.ssh", owner=vps.tunnel_user, group=vps.tunnel_user, mode=0o700),
        *keys_ops(inv, vps, {}),
        revoked_keys_file(inv),
        sshd_dropin(variables),
        File(VPS_DEFAULTS["reaper_path"], ROLE.render("reaper.sh.j2"), mode=0o755, notify=("restart reaper",),
             title="stale-session reaper script"),
        File(VPS_DEFAULTS["reaper_unit_path"], ROLE.render("reaper.service.j2", **variables), notify=("restart reaper",),
             title=f"systemd unit {VPS_DEFAULTS['reaper_unit']}"),
        Service(VPS_DEFAULTS["reaper_unit"], covers=("restart reaper",)),
        *metrics_ops(inv, vps, served_certificates(variables)),
        Directory(VPS_DEFAULTS["nginx_locations_dir"]),
        Directory(VPS_DEFAULTS["nginx_auth_dir"], group="www-data", mode=0o750),
        *acme_ops(vps),
        *status_page_ops(vps, variables),
        *nginx_ops(routes, variables),
    ]
    return ops


def teardown_ops(vps: VpsSpec, *, purge: bool) -> list[Op]:
    ops: list[Op] = [
        FirewallClosed(),
        Service(VPS_DEFAULTS["reaper_unit"], enabled=False, running=False, title=f"service {VPS_DEFAULTS['reaper_unit']} stopped and disabled"),
        Absent(VPS_DEFAULTS["reaper_unit_path"], notify=("daemon-reload",)),
        *metrics_absent_ops(),
        *status_page_absent_ops(),
        Absent(VPS_DEFAULTS["reaper_path"].rsplit("/", 1)[0]),
        Absent(VPS_DEFAULTS["sshd_dropin"], notify=("reload sshd",)),
        Absent(VPS_DEFAULTS["revoked_keys"]),
        UserAbsent(vps.tunnel_user),
        *nginx_absent_ops(),
        CertificatesReleased(purge, vps),
        Absent(VPS_DEFAULTS["acme_webroot"]),
        Absent(VPS_DEFAULTS["certbot_dropin"], notify=("daemon-reload",)),
        FolderGone(VPS_DEFAULTS["certbot_dropin"].rsplit("/", 1)[0], frozenset({VPS_DEFAULTS["certbot_dropin"].rsplit("/", 1)[1]})),
        Absent(VPS_DEFAULTS["acme_ca_bundle"]),
        FolderGone(VPS_DEFAULTS["acme_ca_bundle"].rsplit("/", 1)[0], frozenset({VPS_DEFAULTS["acme_ca_bundle"].rsplit("/", 1)[1]})),
    ]
    if purge:
        ops.append(PackagesAbsent((VPS_DEFAULTS["nginx_package"], VPS_DEFAULTS["certbot_package"], VPS_DEFAULTS["metrics_package"])))
    return ops


def packages(vps: VpsSpec) -> Packages:
    return Packages((VPS_DEFAULTS["nginx_package"], *([VPS_DEFAULTS["certbot_package"]] if vps.acme else []),
                     *([VPS_DEFAULTS["metrics_package"]] if vps.metrics else []),
                     *([VPS_DEFAULTS["status_page_package"]] if vps.status_page else [])))


def certificates(remote: Remote, inv: Inventory, vps: VpsSpec, found: AcmeFound, play: Play) -> tuple[bool, list[str]]:
    """Each ACME name's certificate, one at a time: a name the CA refuses fails alone (its reason in one line),
    the others go on. Returns whether any changed, and the names that failed."""
    changed, failed = False, []
    for name in acme_names(inv, vps):
        assert vps.acme is not None
        op = Certificate(name, vps.acme, vps)
        try:
            changed |= converge(remote, [op], play.reporter, play.options.mode).changed
        except StepFailed:
            failed.append(name)
    return changed, failed


def converge_vps(play: Play, remote: Remote) -> list[str]:
    """Converge one VPS; the ACME names whose certificate could not be obtained (everything else is done).
    Raises StepFailed."""
    inv = play.inventory
    vps = inv.vps[remote.name]
    pkgs = packages(vps)
    seen = Observe(DEFAULT_SERVERS_FACT, lambda _: "", title="nginx default server")
    certs = Observe(acme_fact(vps), lambda _: "", title="certificates")
    memory = memory_observer(inv, vps)
    # one read of the VPS, for all of it (which ops there are does not depend on what it finds)
    opened = FirewallOpen(inv, vps)
    known = facts_for(remote, [pkgs, *converge_ops(inv, vps), SshdPasswordsCheck(), seen, certs, memory, opened])
    crowded = over_capacity(sessions_on(inv, vps), known.value(MEMORY))  # a warning: the Pis are provisioned anyway
    if crowded is not None:
        play.reporter.warn(vps.name, crowded)
    tls = bool(vps.tls_certificate or vps.acme)
    ports = {vps.http_port, *([vps.https_port] if tls else [])}
    found = others_default_servers(known, ports)
    # HTTPS for unknown names is refused unless the user has a default server there (one on port 80 only does not
    # stop nginx from giving them the first named route)
    reject = tls and not others_default_servers(known, {vps.https_port})
    seen.describe = lambda _: default_server_note(found)
    present = known.value(certs.fact)
    # a key the file lists for two Pis (written by hand, or before pitunnel checked): kept for neither
    refuse_shared(play.reporter, vps.name, shared_keys(inv, vps, {}, known.file(keys_path())))
    ops: list[Op] = [*converge_ops(inv, vps, claim_default=not found, certs=present, reject_unknown=reject), SshdPasswordsCheck(), seen,
                     memory, opened]
    # the account first: one pitunnel did not make is refused before anything (Nginx too) is touched
    account = [op for op in ops if isinstance(op, SystemUser)]
    first = converge(remote, [*account, pkgs], play.reporter, play.options.mode, known=known)
    # installing Nginx adds files (its default site, its config) the rest must see as they are now
    installed = first.changes(pkgs) and not play.options.check
    rest = [op for op in ops if not isinstance(op, SystemUser)]
    converge(remote, rest, play.reporter, play.options.mode, handlers(remote), known=None if installed else known)
    if vps.acme is None:
        return []
    # Nginx now answers every name's challenge on port 80: certbot can prove them; then HTTPS for those it got
    obtained, failed = certificates(remote, inv, vps, present, play)
    if obtained and not play.options.check:
        now = read(remote, acme_fact(vps))
        after = [op for op in converge_ops(inv, vps, claim_default=not found, certs=now, reject_unknown=reject)
                 if not isinstance(op, SystemUser)]
        converge(remote, after, play.reporter, play.options.mode, handlers(remote))
    return failed


def converge_selected(play: Play) -> set[str]:
    """Converge every selected VPS; the VPSes where a certificate could not be obtained (reported, each
    for its name alone): the caller marks them failed once the rest of its run (the Pis) is done."""
    inv = play.inventory
    results = play.each_selected(inv.vps.values(), lambda remote: converge_vps(play, remote))
    return {name for name, failed in results.items() if failed}


def teardown(play: Play, *, purge: bool) -> None:
    inv = play.inventory

    def work(remote: Remote) -> None:
        converge(remote, teardown_ops(inv.vps[remote.name], purge=purge), play.reporter, play.options.mode,
                 handlers(remote))

    play.each_selected(inv.vps.values(), work)
