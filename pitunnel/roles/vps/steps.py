"""What a VPS must look like: the tunnel account, its sshd Match block, the Pis' keys, and Nginx."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitunnel.facts import LISTENERS, Fact, Facts, FileState, command_fact, gather, read
from pitunnel.inventory import NAME_RE, Inventory, PiSpec, TunnelSpec, VpsSpec, acme_name
from pitunnel.inventory.revoked import records, revoked_key
from pitunnel.ops import (STATE_DIR, Absent, Directory, File, Handler, Observe, Op, Packages, PackagesAbsent, Plan,
                          Pruned, Service, SystemUser, UserAbsent, backup_commands, q)
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.report import Reporter
from pitunnel.role import Role
from pitunnel.runner import Mode, StepFailed, converge, facts_for, sshd_reload
from pitunnel.sshkeys import BadPublicKey, parse_public_key
from pitunnel.roles.contract import PiOffer, VpsFacts, listen_spec, realm
from pitunnel.roles.vps.acme import (AcmeFound, Certificate, CertificatesReleased, FolderGone, acme_fact,
                                     live_paths)
from pitunnel.roles.vps.checks import SshdPasswordsCheck
from pitunnel.roles.vps.sessions import SessionsEnded

ROLE = Role("vps")
D = ROLE.defaults
KEY_MARKER = "pitunnel:"


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP tunnel as Nginx sees it."""

    pi: str
    name: str
    port: int
    path: str | None
    server_name: str | None
    auth_file: str | None
    auth_source: Path | None
    websocket: bool
    client_max_body_size: str
    hsts: bool = False
    acme_name: str | None = None  # the name of its ACME certificate (its server_name, or the VPS's public_name)

    @property
    def upstream(self) -> str:
        return f"pitunnel_{self.file_stem}"

    @property
    def file_stem(self) -> str:
        return route_stem(self.pi, self.name)


def route_stem(pi: str, tunnel: str) -> str:
    """The name of a tunnel's nginx files and upstream, one per (Pi, tunnel) pair.

    Names use only a-z, 0-9 and '-' (inventory.NAME_RE), never '_': joined by one '_', the pair reads
    back by splitting at the only '_', so two tunnels never share a name (Pi `a-b` tunnel `c` is
    `a-b_c`, Pi `a` tunnel `b-c` is `a_b-c`).
    """
    assert NAME_RE.fullmatch(pi) and NAME_RE.fullmatch(tunnel), (pi, tunnel)
    return f"{pi}_{tunnel}"


def authorized_line(vps: VpsSpec, pi: PiSpec, pubkey: str) -> str:
    """A Pi's key may only open its own listeners, and nothing else: no command, pty, agent or -L."""
    listens = "".join(f'permitlisten="{listen_spec(t)}",' for t in pi.tunnels)
    forwarding = f"port-forwarding,{listens}" if pi.tunnels else ""  # no tunnels: no forwarding at all
    options = f'restrict,{forwarding}command="{D["forced_command"]}"'
    keytype, blob = pubkey.split()[:2]
    return f"{options} {keytype} {blob} {KEY_MARKER}{pi.name}"


@dataclass(frozen=True)
class SharedKey:
    """One key (`type blob`) that two Pis or more would hold on one VPS: sshd would take the first line
    with it, so one Pi could open, or block, another's listeners. `kept`: the Pi it stays with, the one
    the file lists it for alone (it was that Pi's first); None when the file cannot tell (it lists it for
    none of them, or for several): then it is written for none."""

    key: str
    pis: tuple[str, ...]
    kept: str | None

    @property
    def refused(self) -> tuple[str, ...]:
        return tuple(p for p in self.pis if p != self.kept)

    def why(self, pi: str, vps: str) -> str:
        """The one line that refuses `pi`'s use of the key, naming the other Pi(s)."""
        others = ", ".join(p for p in self.pis if p != pi)
        try:
            shown = parse_public_key(self.key).fingerprint
        except BadPublicKey:
            shown = self.key.split()[-1][:20] + "..."
        rederive = "remove that .pub there and rerun: it is derived again from the Pi's own private key"
        if self.kept is not None:
            return (f"refused: its tunnel key {shown} is {self.kept}'s (authorised for {self.kept} on {vps} first); "
                    f"nothing written for {pi}, {self.kept} keeps its key. Fix: look into {pi}, whose tunnel key's "
                    f".pub is not its own key ({rederive})")
        return (f"refused: its tunnel key {shown} is offered for {others} too, and {vps} cannot tell whose it is; "
                f"written for neither. Fix: find the Pi whose tunnel key's .pub is not its own key ({rederive}); "
                "the other then gets its key")


def settle_keys(before: Mapping[str, Sequence[str]],
                wanted: Mapping[str, Sequence[str]]) -> tuple[dict[str, list[str]], list[SharedKey]]:
    """Each Pi's keys to write (`wanted`, each key `type blob`), so that no key is any two Pis': a key that
    several would hold stays with the one the file (`before`) lists it for alone, and the others get what
    the file has for them (nothing new is written for them); when the file cannot tell, none of them has
    it. Returns the keys to write and each key refused."""
    result = {n: list(dict.fromkeys(keys)) for n, keys in wanted.items()}
    taken: dict[str, set[str]] = {n: set() for n in result}  # keys each Pi may never have in this file
    shared: list[SharedKey] = []
    for _ in range(1 + sum(len(keys) for keys in result.values())):  # each round settles one key for good
        holders: dict[str, list[str]] = {}
        for name, keys in result.items():
            for k in keys:
                holders.setdefault(k, []).append(name)
        clash = next(((k, names) for k, names in holders.items() if len(names) > 1), None)
        if clash is None:
            break
        key, names = clash
        first = [n for n in names if key in before.get(n, ())]
        found = SharedKey(key, tuple(names), first[0] if len(first) == 1 else None)
        shared.append(found)
        for name in found.refused:
            taken[name].add(key)
            result[name] = [k for k in dict.fromkeys(before.get(name, ())) if k not in taken[name]]
    return result, shared


def _keys_wanted(inv: Inventory, vps: VpsSpec, new_keys: Mapping[str, str | Sequence[str]], drop: frozenset[str],
                 state: FileState) -> tuple[dict[str, PiSpec], dict[str, list[str]], list[SharedKey]]:
    pis = {pi.name: pi for pi in inv.pis_on(vps) if pi.name not in drop}
    before = authorised_keys(state.content.decode(errors="replace") if state.exists else "")
    given = {n: [k] if isinstance(k, str) else list(k) for n, k in new_keys.items()}
    # a revoked key never comes back, whoever offers it (docs/operations.md)
    wanted = {n: [" ".join(k.split()[:2]) for k in given.get(n, before.get(n, [])) if not revoked_key(inv, k)]
              for n in pis}
    keys, shared = settle_keys(before, wanted)
    return pis, keys, shared


def authorized_keys(inv: Inventory, vps: VpsSpec, new_keys: Mapping[str, str | Sequence[str]],
                    drop: frozenset[str] = frozenset()) -> File:
    """The tunnel account's authorized_keys: a line per key of each Pi of this VPS (one, or two while its
    key is rotated), options always from the inventory, the keys kept from the file unless `new_keys`
    brings that Pi's (one key, or all of them in order); Pis no longer listed go. A key is never written
    for two Pis (settle_keys; shared_keys says which were refused)."""

    def render(state: FileState) -> str:
        pis, keys, _ = _keys_wanted(inv, vps, new_keys, drop, state)
        return "".join(authorized_line(vps, pis[n], k) + "\n" for n in pis for k in keys.get(n, []))

    return File(keys_path(), render, owner=vps.tunnel_user, group=vps.tunnel_user,
                mode=0o600, title="authorized keys of the Pis")


def keys_ops(inv: Inventory, vps: VpsSpec, new_keys: Mapping[str, str | Sequence[str]],
             drop: frozenset[str] = frozenset()) -> list[Op]:
    """authorized_keys as `authorized_keys` writes it, then every live session of a key it no longer
    authorises ended (roles/vps/sessions.py): a key that leaves the file takes its sessions with it, in the
    same converge, before the step reports success. Every step that writes the file uses this."""
    keys = authorized_keys(inv, vps, new_keys, drop)
    return [keys, SessionsEnded(vps.tunnel_user, keys)]


def keys_path() -> str:
    return f"{D['tunnel_home']}/.ssh/authorized_keys"


def shared_keys(inv: Inventory, vps: VpsSpec, new_keys: Mapping[str, str | Sequence[str]], state: FileState,
                drop: frozenset[str] = frozenset()) -> list[SharedKey]:
    """The keys authorized_keys(...) refuses for the file in `state`: two Pis' (or more) each."""
    return _keys_wanted(inv, vps, new_keys, drop, state)[2]


def refuse_shared(reporter: Reporter, vps: str, shared: Sequence[SharedKey]) -> frozenset[str]:
    """A line for each Pi refused a key another Pi holds or offers; the Pis refused."""
    refused = []
    for found in shared:
        for pi in found.refused:
            reporter.line(pi, "failed", f"tunnel key on {vps}", found.why(pi, vps))
            refused.append(pi)
    return frozenset(refused)


def authorised_keys(text: str) -> dict[str, list[str]]:
    """Each Pi's keys (`type blob`) in the tunnel account's authorized_keys, in the file's order."""
    keys: dict[str, list[str]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[-1].startswith(KEY_MARKER):
            keys.setdefault(words[-1][len(KEY_MARKER):], []).append(f"{words[-3]} {words[-2]}")
    return keys


def _is_key(text: str) -> bool:
    try:
        parse_public_key(text)
    except BadPublicKey:
        return False
    return True


def account_observer(vps: VpsSpec) -> Observe[bool]:
    """Is the tunnel account there?"""
    fact = Fact("tunnel-account", f"getent passwd {q(vps.tunnel_user)} || echo MISSING", lambda out: "MISSING" not in out)
    return Observe(fact, lambda there: "present" if there else "missing", title=f"tunnel account {vps.tunnel_user}")


HOST_KEYS = Fact("vps-host-keys", "cat /etc/ssh/ssh_host_*_key.pub 2>/dev/null | awk '{print $1, $2}'",
                 lambda out: tuple(out.splitlines()))


def permitted_fact(vps: VpsSpec) -> Fact[frozenset[str]]:
    """The listeners sshd permits the tunnel account (its effective PermitListen)."""
    return Fact("permitlisten", f"sshd -T -C {q(f'user={vps.tunnel_user},host=pitunnel,addr=192.0.2.1')} "
                "2>/dev/null | grep -i '^permitlisten ' || true", lambda out: frozenset(out.split()[1:]))


def listeners(remote: Remote) -> frozenset[str]:
    """What listens on this VPS now (one round trip)."""
    return read(remote, LISTENERS)


def listeners_and_certificates(remote: Remote, vps: VpsSpec) -> tuple[frozenset[str], AcmeFound]:
    """For status: what listens on this VPS, and its certificates with their expiry (one round trip)."""
    facts = gather(remote, [LISTENERS, acme_fact(vps)])
    return facts.value(LISTENERS), facts.value(acme_fact(vps))


def certificate_expiry(vps: VpsSpec, tunnel: TunnelSpec, found: AcmeFound) -> str:
    """When the certificate an http route answers with expires, as status shows it."""
    name = acme_name(vps, tunnel)
    if name is not None and name in found.certs and found.certs[name].live:
        return found.certs[name].not_after or "?"
    if vps.tls_certificate:
        return found.given_not_after or "?"
    return "none yet" if name else "-"


def authorise(remote: Remote, inv: Inventory, vps: VpsSpec, offers: Sequence[PiOffer], reporter: Reporter,
              mode: Mode) -> VpsFacts:
    """For provision-pi: the keys the Pis offer in the tunnel account's authorized_keys, once sshd permits
    their listeners; returns what the Pis need of this VPS. Raises StepFailed."""
    account = account_observer(vps)
    keys = Observe(HOST_KEYS, lambda v: f"{len(v)} host keys read", title="VPS host keys")
    ss = Observe(LISTENERS, lambda v: "read", title="listeners on the VPS")
    permitted = Observe(permitted_fact(vps), lambda v: "read", title="listeners sshd permits the tunnel account")
    # only keys that parsed on the Pi's side reach this VPS (base refused the others, each for its Pi alone)
    new = {o.name: o.pubkey for o in offers if o.pubkey is not None and _is_key(o.pubkey)}
    keys_op = keys_ops(inv, vps, new)
    # one read of the VPS for the checks below and for the keys: a rerun that changes nothing costs
    # one round trip here, not two
    known = facts_for(remote, [account, keys, ss, permitted, *keys_op])
    converge(remote, [account, keys, ss, permitted], reporter, mode, known=known)
    # a Pi offering a key another Pi holds or offers: refused alone (the other Pis' keys are written), so
    # that no Pi can hold up the others' provisioning with a copied key; docs/security.md
    refused = refuse_shared(reporter, remote.name, shared_keys(inv, vps, new, known.file(keys_path())))
    there, allowed = known.value(account.fact), known.value(permitted.fact)
    unknown = [f"{o.name}: {spec}" for o in offers for spec in o.listens if spec not in allowed]
    if unknown and there:
        reporter.line(remote.name, "skipped" if mode.check else "failed", "sshd permits the Pis' listeners",
                      f"not yet: {', '.join(unknown)}; run `invoke provision-vps` (or `invoke provision`) first")
        if not mode.check:
            raise StepFailed("PermitListen behind the inventory")
    found = VpsFacts(tuple(k for k in known.value(HOST_KEYS) if k.strip()), known.value(LISTENERS), refused)
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


def http_routes(inv: Inventory, vps: VpsSpec) -> list[HttpRoute]:
    routes = []
    for pi, tunnel in inv.tunnels_on(vps):
        if tunnel.kind != "http" or pi.name in inv.revoked:  # a revoked Pi's routes stay off until it is back
            continue
        stem = route_stem(pi.name, tunnel.name)
        auth = f"{D['nginx_auth_dir']}/{stem}.htpasswd" if tunnel.basic_auth_file else None
        routes.append(HttpRoute(pi.name, tunnel.name, tunnel.remote_port, tunnel.path, tunnel.server_name,
                                auth, tunnel.basic_auth_file, tunnel.websocket, tunnel.client_max_body_size,
                                tunnel.hsts, acme_name(vps, tunnel)))
    return routes


DEBIAN_SITE = "/etc/nginx/sites-available/default"
SET_ASIDE_RECORD = f"{STATE_DIR}/nginx-default-site"  # present: pitunnel set Debian's default site aside


def debian_default_untouched(output: str) -> bool:
    """Is sites-enabled/default still Debian's link to Debian's unmodified default site (its conffile sum)?"""
    link, md5, shipped = ([*output.split("\n"), "", "", ""])[:3]
    return link.strip() == DEBIAN_SITE and bool(md5.strip()) and md5.strip() == shipped.strip()


@dataclass(frozen=True)
class DebianDefault:
    """sites-enabled/default as found: there or not, still Debian's unmodified site or not, and whether
    pitunnel recorded that it set it aside."""

    absent: bool
    untouched: bool
    recorded: bool


def debian_default(output: str) -> DebianDefault:
    return DebianDefault(output.split("\n", 1)[0].strip() == "ABSENT", debian_default_untouched(output),
                         output.rstrip().endswith("recorded"))


DEBIAN_DEFAULT_FACT = Fact("nginx-debian-default", f"""\
p={q(D['nginx_debian_default'])}
if [ -L "$p" ]; then readlink "$p"; elif [ -e "$p" ]; then echo FILE; else echo ABSENT; fi
echo "$(md5sum < {q(DEBIAN_SITE)} 2>/dev/null | cut -d' ' -f1)"
echo "$(dpkg-query -W -f='${{Conffiles}}\\n' 2>/dev/null | awk '$1 == "{DEBIAN_SITE}" {{print $2; exit}}')"
[ -e {q(SET_ASIDE_RECORD)} ] && echo recorded || echo none""", debian_default)


@dataclass
class DebianDefaultSetAside(Op):
    """Debian's welcome site answers as default server: set it aside (and record that pitunnel did), but
    only while it is Debian's unmodified file; a default site the user changed or replaced stays."""

    title: str = "Debian's default site set aside"
    notify: tuple[str, ...] = ("reload nginx",)

    def facts(self) -> list[Fact[Any]]:
        return [DEBIAN_DEFAULT_FACT]

    def plan(self, facts: Facts) -> Plan:
        found = facts.value(DEBIAN_DEFAULT_FACT)
        if found.absent:
            return Plan([], "not there")
        if not found.untouched:
            return Plan([], "left as it is: not Debian's unmodified default site")
        path = D["nginx_debian_default"]
        return Plan([*backup_commands(path), f"rm -f {q(path)}", f"mkdir -p {STATE_DIR} && chmod 700 {STATE_DIR}",
                     f": > {q(SET_ASIDE_RECORD)}"], "remove (recorded, put back on teardown)", backups=[path])


@dataclass
class DebianDefaultRestored(Op):
    """Teardown: Debian's default site back, only if pitunnel set it aside (and Nginx is still there)."""

    title: str = "Debian's default site back"
    notify: tuple[str, ...] = ("reload nginx",)

    def facts(self) -> list[Fact[Any]]:
        return [DEBIAN_DEFAULT_FACT]

    def plan(self, facts: Facts) -> Plan:
        if not facts.value(DEBIAN_DEFAULT_FACT).recorded:
            return Plan([], "pitunnel did not set it aside")
        path = D["nginx_debian_default"]
        cmds = [f"if [ -e {q(DEBIAN_SITE)} ] && ! [ -e {q(path)} ] && ! [ -L {q(path)} ]; then "
                f"ln -s {q(DEBIAN_SITE)} {q(path)}; fi",
                f"rm -f {q(SET_ASIDE_RECORD)}", f"rmdir {STATE_DIR} 2>/dev/null || true"]
        return Plan([*backup_commands(path), *cmds], "link back (pitunnel set it aside)", backups=[path])


# `listen ... default_server` lines in the enabled Nginx configuration that is not pitunnel's.
DEFAULT_SERVERS_FACT = command_fact("nginx-default-servers", f"""\
for f in {D['nginx_sites_dir']}/* /etc/nginx/conf.d/*.conf; do
  [ -f "$f" ] || continue
  case "$f" in {D['nginx_default_site']} | {D['nginx_sites_dir']}/pitunnel-*.conf | {D['nginx_conf']}) continue ;; esac
  grep -E '^[[:space:]]*listen[[:space:]][^#;]*[[:space:]]default(_server)?([[:space:];]|$)' "$f" | sed "s|^|$f |"
done; true""")


def others_default_servers(facts: Facts, ports: set[int]) -> list[str]:
    """Files, not pitunnel's, that make a server the default one on one of `ports` (Debian's unmodified
    default site does not count: it is set aside)."""
    found = []
    untouched = facts.value(DEBIAN_DEFAULT_FACT).untouched
    for line in facts.output(DEFAULT_SERVERS_FACT).splitlines():
        path, _, listen = line.partition(" ")
        if path == D["nginx_debian_default"] and untouched:
            continue
        words = listen.replace(";", " ").split()
        address = words[1] if len(words) > 1 else ""
        port = address.rsplit(":", 1)[-1] if not address.endswith("]") else "80"
        if (int(port) if port.isdigit() else 80) in ports and path not in found:
            found.append(path)
    return found


def default_server_note(found: list[str]) -> str:
    if not found:
        return "pitunnel's path-prefix server is the default server"
    return (f"yours is ({', '.join(found)}): pitunnel's path-prefix server does not claim default_server, so "
            f"path tunnels answer only for requests your default server does not take (use server_name tunnels)")


def handlers(remote: Remote) -> list[Handler]:
    """The VPS role's handlers, for every step."""
    return [
        sshd_reload(remote, D["ssh_service"], "a fresh login failed after the sshd reload (this change would lock you out)"),
        Handler("restart reaper", ["systemctl daemon-reload", f"systemctl restart {D['reaper_unit']}"]),
        Handler("reload nginx", ["if [ -x /usr/sbin/nginx ]; then nginx -t 2>&1 && systemctl reload-or-restart nginx; fi"]),
        Handler("daemon-reload", ["systemctl daemon-reload"]),
        Handler("restart metrics", ["systemctl daemon-reload", f"systemctl restart {D['metrics_unit']}"]),
        Handler("restart node exporter", ["systemctl daemon-reload", f"systemctl restart {D['metrics_service']}"]),
        Handler("restart node exporter if there", [
            "systemctl daemon-reload",
            f"! systemctl cat {D['metrics_service']} >/dev/null 2>&1 || systemctl try-restart {D['metrics_service']}"]),
    ]


def metrics_ops(inv: Inventory, vps: VpsSpec) -> list[Op]:
    """`metrics: true`: the node exporter where the inventory says, and pitunnel's metrics for its textfile
    collector, written by a service of the VPS's own; `metrics: false`: none of pitunnel's pieces, and
    the exporter purged if pitunnel installed it (one that was there before stays, as it was)."""
    if not vps.metrics:
        return [*metrics_absent_ops(), PackagesAbsent((D["metrics_package"],))]
    tunnels = [dict(pi=pi.name, tunnel=t.name, listen=listen_spec(t)) for pi, t in inv.tunnels_on(vps)]
    variables = dict(metrics_address=vps.metrics_address, metrics_tunnels=tunnels, metrics_vps=vps.name)
    return [
        File(D["metrics_dropin"], ROLE.render("node-exporter.conf.j2", **variables), notify=("restart node exporter",),
             title=f"node exporter on {vps.metrics_address}, textfile collector on"),
        Service(D["metrics_service"], covers=("restart node exporter",)),
        File(D["metrics_path"], ROLE.render("metrics.sh.j2", **variables), mode=0o755, notify=("restart metrics",),
             title="tunnel metrics writer script"),
        File(D["metrics_unit_path"], ROLE.render("metrics.service.j2", **variables), notify=("restart metrics",),
             title=f"systemd unit {D['metrics_unit']}"),
        Service(D["metrics_unit"], covers=("restart metrics",)),
    ]


def metrics_absent_ops() -> list[Op]:
    return [
        Service(D["metrics_unit"], enabled=False, running=False, title=f"service {D['metrics_unit']} stopped and disabled"),
        Absent(D["metrics_unit_path"], notify=("daemon-reload",)),
        Absent(D["metrics_path"]),
        Absent(f"{D['metrics_textfile_dir']}/pitunnel.prom"),
        Absent(D["metrics_dropin"], notify=("restart node exporter if there",)),
    ]


def served_tls(vps: VpsSpec, name: str | None, certs: AcmeFound) -> dict[str, str] | None:
    """The certificate a server answers HTTPS with: its ACME certificate once certbot has it, else the
    hand-given one; None: plain HTTP only."""
    if name is not None and name in certs.certs and certs.certs[name].live:
        return live_paths(name)
    if vps.tls_certificate and vps.tls_key:
        return dict(certificate=vps.tls_certificate, key=vps.tls_key)
    return None


def route_vars(r: HttpRoute, vps: VpsSpec | None = None, certs: AcmeFound = AcmeFound()) -> dict[str, Any]:
    """One HTTP route as the Nginx templates see it (`t`, and each of `tunnels`). `waiting`: basic auth and
    no certificate yet (its ACME certificate is still to come): Nginx answers 503, never asks for a password
    in clear."""
    tls = served_tls(vps, r.acme_name, certs) if vps is not None else None
    return dict(pi=r.pi, realm=realm(r.pi), name=r.name, port=r.port, path=r.path, server_name=r.server_name, auth_file=r.auth_file,
                upstream=r.upstream, file_stem=r.file_stem, websocket=r.websocket,
                client_max_body_size=r.client_max_body_size, auth_source=str(r.auth_source) if r.auth_source else None,
                hsts=r.hsts, tls=tls, waiting=tls is None and r.auth_file is not None)


def revoked_lines(inv: Inventory) -> list[str]:
    """The keys every revoked Pi had (revocations in force or ended), as sshd's RevokedKeys file lists them."""
    return [f"{' '.join(k.split()[:2])} pitunnel-revoked:{r.pi}\n" for r in records(inv).values() for k in r.keys]


def revoked_keys_file(inv: Inventory) -> File:
    """sshd's RevokedKeys file for the tunnel account, before the Match block names it (sshd refuses every key of
    the account if the file it names cannot be read); never made while no key is revoked."""
    lines = revoked_lines(inv)
    return File(D["revoked_keys"], "".join(dict.fromkeys(lines)), create=bool(lines),
                title="revoked keys sshd refuses (RevokedKeys)")


def sshd_dropin(variables: dict[str, Any]) -> File:
    return File(D["sshd_dropin"], ROLE.render("sshd.conf.j2", **variables), validate="sshd -t",
                notify=("reload sshd",), title="sshd Match block for the tunnel account")


def permitted_listens(inv: Inventory, vps: VpsSpec) -> list[str]:
    """The listeners sshd permits the tunnel account: every Pi's on this VPS, in inventory order, the revoked
    Pis' still in the inventory too (their key is gone, so nobody can open them; the Pi, provisioned again
    with a new key, needs no provision-vps first, and sshd's config does not change when it comes back)."""
    every = {**inv.pis, **inv.shut}
    order = [n for n in inv.order if n in every] + [n for n in every if n not in inv.order]
    return [listen_spec(t) for n in order if vps.name in every[n].all_vps for t in every[n].on(vps.name).tunnels]


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
                revoked_keys=D["revoked_keys"] if revoked_lines(inv) else None,
                tunnels=[route_vars(r, vps, certs) for r in http_routes(inv, vps)])


def acme_names(inv: Inventory, vps: VpsSpec) -> list[str]:
    """The names this VPS gets ACME certificates for, in inventory order."""
    return list(dict.fromkeys(r.acme_name for r in http_routes(inv, vps) if r.acme_name))


def acme_ops(vps: VpsSpec) -> list[Op]:
    """What certbot needs on a VPS with `acme:`: the challenge folder Nginx serves, and the CA bundle for
    the directory's TLS (for pitunnel's certbot runs and the timer's renewals alike)."""
    if vps.acme is None:
        return []
    ops: list[Op] = [Directory(D["acme_webroot"])]
    if vps.acme.ca_bundle is not None:
        ops += [Directory(D["acme_ca_bundle"].rsplit("/", 1)[0]),
                File(D["acme_ca_bundle"], vps.acme.ca_bundle.read_text(), title="CA bundle for the ACME directory"),
                File(D["certbot_dropin"], f"# Managed by pitunnel: certbot trusts the ACME directory's CA (acme.ca_bundle)\n"
                     f"[Service]\nEnvironment=REQUESTS_CA_BUNDLE={D['acme_ca_bundle']}\n",
                     notify=("daemon-reload",), title="certbot renewals trust the ACME directory's CA")]
    return ops


def converge_ops(inv: Inventory, vps: VpsSpec, *, claim_default: bool = True, certs: AcmeFound = AcmeFound(),
                 reject_unknown: bool | None = None) -> list[Op]:
    variables = context(inv, vps, claim_default=claim_default, certs=certs, reject_unknown=reject_unknown)
    routes = http_routes(inv, vps)
    tunnels = {(t["pi"], t["name"]): t for t in variables["tunnels"]}
    ops: list[Op] = [
        SystemUser(vps.tunnel_user, home=D["tunnel_home"], comment="pitunnel reverse tunnels"),
        Directory(f"{D['tunnel_home']}/.ssh", owner=vps.tunnel_user, group=vps.tunnel_user, mode=0o700),
        *keys_ops(inv, vps, {}),
        revoked_keys_file(inv),
        sshd_dropin(variables),
        File(D["reaper_path"], ROLE.render("reaper.sh.j2"), mode=0o755, notify=("restart reaper",),
             title="stale-session reaper script"),
        File(D["reaper_unit_path"], ROLE.render("reaper.service.j2", **variables), notify=("restart reaper",),
             title=f"systemd unit {D['reaper_unit']}"),
        Service(D["reaper_unit"], covers=("restart reaper",)),
        *metrics_ops(inv, vps),
        Directory(D["nginx_locations_dir"]),
        Directory(D["nginx_auth_dir"], group="www-data", mode=0o750),
        *acme_ops(vps),
    ]
    for r in routes:
        if r.auth_source is not None and r.auth_file is not None:
            ops.append(File(r.auth_file, r.auth_source.read_text(), group="www-data", mode=0o640, secret=True,
                            notify=("reload nginx",), title=f"basic auth for {r.pi}/{r.name}"))
    ops.append(File(D["nginx_conf"], ROLE.render("nginx-http.conf.j2", **variables),
                    notify=("reload nginx",), title="nginx upstreams for the tunnels"))
    for r in routes:
        if r.server_name:
            ops.append(File(f"{D['nginx_sites_dir']}/pitunnel-{r.file_stem}.conf",
                            ROLE.render("nginx-server.conf.j2", t=tunnels[r.pi, r.name], **variables), notify=("reload nginx",),
                            title=f"nginx site {r.server_name} -> {r.pi}/{r.name}"))
        else:
            ops.append(File(f"{D['nginx_locations_dir']}/{r.file_stem}.conf",
                            ROLE.render("nginx-location.conf.j2", t=tunnels[r.pi, r.name], **variables), notify=("reload nginx",),
                            title=f"nginx path {r.path} -> {r.pi}/{r.name}"))
    ops += [
        Pruned(D["nginx_sites_dir"], "pitunnel-*.conf",
               frozenset(f"pitunnel-{r.file_stem}.conf" for r in routes if r.server_name), notify=("reload nginx",)),
        Pruned(D["nginx_locations_dir"], "*.conf",
               frozenset(f"{r.file_stem}.conf" for r in routes if not r.server_name), notify=("reload nginx",)),
        Pruned(D["nginx_auth_dir"], "*.htpasswd",
               frozenset(f"{r.file_stem}.htpasswd" for r in routes if r.auth_file), notify=("reload nginx",)),
        DebianDefaultSetAside(),
        File(D["nginx_default_site"], ROLE.render("nginx-default-site.conf.j2", **variables),
             notify=("reload nginx",), title="nginx server for path-prefix tunnels"),
    ]
    return ops


def teardown_ops(vps: VpsSpec, *, purge: bool) -> list[Op]:
    ops: list[Op] = [
        Service(D["reaper_unit"], enabled=False, running=False, title=f"service {D['reaper_unit']} stopped and disabled"),
        Absent(D["reaper_unit_path"], notify=("daemon-reload",)),
        *metrics_absent_ops(),
        Absent(D["reaper_path"].rsplit("/", 1)[0]),
        Absent(D["sshd_dropin"], notify=("reload sshd",)),
        Absent(D["revoked_keys"]),
        UserAbsent(vps.tunnel_user),
        Absent(D["nginx_default_site"], notify=("reload nginx",)),
        Pruned(D["nginx_sites_dir"], "pitunnel-*.conf", frozenset(), notify=("reload nginx",)),
        Absent(D["nginx_conf"], notify=("reload nginx",)),
        Absent("/etc/nginx/pitunnel", notify=("reload nginx",)),
        DebianDefaultRestored(),
        CertificatesReleased(purge, vps),
        Absent(D["acme_webroot"]),
        Absent(D["certbot_dropin"], notify=("daemon-reload",)),
        FolderGone(D["certbot_dropin"].rsplit("/", 1)[0], frozenset({D["certbot_dropin"].rsplit("/", 1)[1]})),
        Absent(D["acme_ca_bundle"]),
        FolderGone(D["acme_ca_bundle"].rsplit("/", 1)[0], frozenset({D["acme_ca_bundle"].rsplit("/", 1)[1]})),
    ]
    if purge:
        ops.append(PackagesAbsent((D["nginx_package"], D["certbot_package"], D["metrics_package"])))
    return ops


def packages(vps: VpsSpec) -> Packages:
    return Packages((D["nginx_package"], *([D["certbot_package"]] if vps.acme else []),
                     *([D["metrics_package"]] if vps.metrics else [])))


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
    # one read of the VPS, for all of it (which ops there are does not depend on what it finds)
    known = facts_for(remote, [pkgs, *converge_ops(inv, vps), SshdPasswordsCheck(), seen, certs])
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
    ops: list[Op] = [*converge_ops(inv, vps, claim_default=not found, certs=present, reject_unknown=reject), SshdPasswordsCheck(), seen]
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


def provision_routes(play: Play) -> set[str]:
    """Converge every selected VPS; the VPSes where a certificate could not be obtained (reported, each
    for its name alone): the caller marks them failed once the rest of its run (the Pis) is done."""
    inv = play.inventory
    results = play.each(play.selected(list(inv.vps.values())), lambda remote: converge_vps(play, remote))
    return {name for name, failed in results.items() if failed}


def provision(play: Play) -> None:
    """`invoke provision-vps`: converge every selected VPS."""
    play.failed |= provision_routes(play)


def teardown(play: Play, *, purge: bool) -> None:
    inv = play.inventory

    def work(remote: Remote) -> None:
        converge(remote, teardown_ops(inv.vps[remote.name], purge=purge), play.reporter, play.options.mode,
                 handlers(remote))

    play.each(play.selected(list(inv.vps.values())), work)
