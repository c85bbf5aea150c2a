"""What a VPS must look like: the tunnel account, its sshd Match block, the Pis' keys, and Nginx."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitunnel.facts import LISTENERS, Fact, Facts, FileState, command_fact, read
from pitunnel.inventory import NAME_RE, Inventory, PiSpec, VpsSpec
from pitunnel.ops import (STATE_DIR, Absent, Directory, File, Handler, Observe, Op, Packages, PackagesAbsent, Plan,
                          Pruned, Service, SshdPasswordsCheck, SystemUser, UserAbsent, backup_commands, q)
from pitunnel.play import Play
from pitunnel.remote import Remote
from pitunnel.report import Reporter
from pitunnel.role import Role
from pitunnel.runner import Mode, StepFailed, converge, facts_for, sshd_reload
from pitunnel.sshkeys import BadPublicKey, parse_public_key
from pitunnel.roles.contract import PiOffer, VpsFacts, listen_spec

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


def authorized_keys(inv: Inventory, vps: VpsSpec, new_keys: dict[str, str], drop: frozenset[str] = frozenset()) -> File:
    """The tunnel account's authorized_keys: a line per Pi of this VPS, options always from the
    inventory, the key kept from the file unless `new_keys` brings one; Pis no longer listed go."""
    pis = {pi.name: pi for pi in inv.pis_on(vps) if pi.name not in drop}

    def render(state: FileState) -> str:
        keys: dict[str, str] = {}
        for line in state.content.decode(errors="replace").splitlines() if state.exists else []:
            words = line.split()
            if len(words) >= 3 and words[-1].startswith(KEY_MARKER):
                keys[words[-1][len(KEY_MARKER):]] = f"{words[-3]} {words[-2]}"
        keys.update(new_keys)
        return "".join(authorized_line(vps, pis[n], keys[n]) + "\n" for n in pis if n in keys)

    return File(f"{D['tunnel_home']}/.ssh/authorized_keys", render, owner=vps.tunnel_user, group=vps.tunnel_user,
                mode=0o600, title="authorized keys of the Pis")


def _is_key(text: str) -> bool:
    try:
        parse_public_key(text)
    except BadPublicKey:
        return False
    return True


def account_observer(vps: VpsSpec) -> Observe[bool]:
    """Is the tunnel account there?"""
    fact = Fact("tunnel-account", f"getent passwd {vps.tunnel_user} || echo MISSING", lambda out: "MISSING" not in out)
    return Observe(fact, lambda there: "present" if there else "missing", title=f"tunnel account {vps.tunnel_user}")


HOST_KEYS = Fact("vps-host-keys", "cat /etc/ssh/ssh_host_*_key.pub 2>/dev/null | awk '{print $1, $2}'",
                 lambda out: tuple(out.splitlines()))


def permitted_fact(vps: VpsSpec) -> Fact[frozenset[str]]:
    """The listeners sshd permits the tunnel account (its effective PermitListen)."""
    return Fact("permitlisten", f"sshd -T -C user={vps.tunnel_user},host=pitunnel,addr=192.0.2.1 "
                "2>/dev/null | grep -i '^permitlisten ' || true", lambda out: frozenset(out.split()[1:]))


def listeners(remote: Remote) -> frozenset[str]:
    """What listens on this VPS now (one round trip)."""
    return read(remote, LISTENERS)


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
    keys_op = authorized_keys(inv, vps, new)
    # one read of the VPS for the checks below and for the keys: a rerun that changes nothing costs
    # one round trip here, not two
    known = facts_for(remote, [account, keys, ss, permitted, keys_op])
    converge(remote, [account, keys, ss, permitted], reporter, mode, known=known)
    there, allowed = known.value(account.fact), known.value(permitted.fact)
    unknown = [f"{o.name}: {spec}" for o in offers for spec in o.listens if spec not in allowed]
    if unknown and there:
        reporter.line(remote.name, "skipped" if mode.check else "failed", "sshd permits the Pis' listeners",
                      f"not yet: {', '.join(unknown)}; run `invoke provision-vps` (or `invoke provision`) first")
        if not mode.check:
            raise StepFailed("PermitListen behind the inventory")
    found = VpsFacts(tuple(k for k in known.value(HOST_KEYS) if k.strip()), known.value(LISTENERS))
    if not there:
        if mode.check:
            reporter.line(remote.name, "skipped", "authorized keys of the Pis",
                          f"{vps.tunnel_user} is not there yet (provision-vps would create it)")
            return found
        reporter.line(remote.name, "failed", "tunnel account", f"{vps.tunnel_user} does not exist: run "
                      "`invoke provision-vps` first")
        raise StepFailed("no tunnel account")
    converge(remote, [keys_op], reporter, mode, known=known)
    return found


def unauthorise(remote: Remote, inv: Inventory, vps: VpsSpec, gone: frozenset[str], reporter: Reporter,
                mode: Mode) -> None:
    """The keys of the Pis in `gone` off the tunnel account, if it is there."""
    account = account_observer(vps)
    if converge(remote, [account], reporter, mode).facts.value(account.fact):
        converge(remote, [authorized_keys(inv, vps, {}, drop=gone)], reporter, mode)


def http_routes(inv: Inventory, vps: VpsSpec) -> list[HttpRoute]:
    routes = []
    for pi, tunnel in inv.tunnels_on(vps):
        if tunnel.kind != "http":
            continue
        stem = route_stem(pi.name, tunnel.name)
        auth = f"{D['nginx_auth_dir']}/{stem}.htpasswd" if tunnel.basic_auth_file else None
        routes.append(HttpRoute(pi.name, tunnel.name, tunnel.remote_port, tunnel.path, tunnel.server_name,
                                auth, tunnel.basic_auth_file, tunnel.websocket, tunnel.client_max_body_size))
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
    ]


def route_vars(r: HttpRoute) -> dict[str, Any]:
    """One HTTP route as the Nginx templates see it (`t`, and each of `tunnels`)."""
    return dict(pi=r.pi, name=r.name, port=r.port, path=r.path, server_name=r.server_name, auth_file=r.auth_file,
                upstream=r.upstream, file_stem=r.file_stem, websocket=r.websocket,
                client_max_body_size=r.client_max_body_size, auth_source=str(r.auth_source) if r.auth_source else None)


def context(inv: Inventory, vps: VpsSpec, *, claim_default: bool = True) -> dict[str, Any]:
    """The variables the VPS's templates are rendered with (the role's defaults under them), here and by
    the Ansible benchmark (benchmarks/ansible/inventory.py) alike."""
    return dict(tunnel_user=vps.tunnel_user, listens=[listen_spec(t) for _, t in inv.tunnels_on(vps)],
                client_alive_interval=vps.client_alive_interval, client_alive_count_max=vps.client_alive_count_max,
                http_port=vps.http_port, https_port=vps.https_port, tls_certificate=vps.tls_certificate,
                tls_key=vps.tls_key, claim_default=claim_default, tunnels=[route_vars(r) for r in http_routes(inv, vps)])


def converge_ops(inv: Inventory, vps: VpsSpec, *, claim_default: bool = True) -> list[Op]:
    variables = context(inv, vps, claim_default=claim_default)
    routes = http_routes(inv, vps)
    ops: list[Op] = [
        SystemUser(vps.tunnel_user, home=D["tunnel_home"], comment="pitunnel reverse tunnels"),
        Directory(f"{D['tunnel_home']}/.ssh", owner=vps.tunnel_user, group=vps.tunnel_user, mode=0o700),
        authorized_keys(inv, vps, {}),
        File(D["sshd_dropin"], ROLE.render("sshd.conf.j2", **variables), validate="sshd -t",
             notify=("reload sshd",), title="sshd Match block for the tunnel account"),
        File(D["reaper_path"], ROLE.render("reaper.sh.j2"), mode=0o755, notify=("restart reaper",),
             title="stale-session reaper script"),
        File(D["reaper_unit_path"], ROLE.render("reaper.service.j2", **variables), notify=("restart reaper",),
             title=f"systemd unit {D['reaper_unit']}"),
        Service(D["reaper_unit"], covers=("restart reaper",)),
        Directory(D["nginx_locations_dir"]),
        Directory(D["nginx_auth_dir"], group="www-data", mode=0o750),
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
                            ROLE.render("nginx-server.conf.j2", t=route_vars(r), **variables), notify=("reload nginx",),
                            title=f"nginx site {r.server_name} -> {r.pi}/{r.name}"))
        else:
            ops.append(File(f"{D['nginx_locations_dir']}/{r.file_stem}.conf",
                            ROLE.render("nginx-location.conf.j2", t=route_vars(r), **variables), notify=("reload nginx",),
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
        Absent(D["reaper_path"].rsplit("/", 1)[0]),
        Absent(D["sshd_dropin"], notify=("reload sshd",)),
        UserAbsent(vps.tunnel_user),
        Absent(D["nginx_default_site"], notify=("reload nginx",)),
        Pruned(D["nginx_sites_dir"], "pitunnel-*.conf", frozenset(), notify=("reload nginx",)),
        Absent(D["nginx_conf"], notify=("reload nginx",)),
        Absent("/etc/nginx/pitunnel", notify=("reload nginx",)),
        DebianDefaultRestored(),
    ]
    if purge:
        ops.append(PackagesAbsent((D["nginx_package"],)))
    return ops


def provision(play: Play) -> None:
    """`invoke provision-vps`: converge every selected VPS."""
    inv = play.inventory

    def work(remote: Remote) -> None:
        vps = inv.vps[remote.name]
        packages = Packages((D["nginx_package"],))
        seen = Observe(DEFAULT_SERVERS_FACT, lambda _: "", title="nginx default server")
        # one read of the VPS, for all of it (which ops there are does not depend on what it finds)
        known = facts_for(remote, [packages, *converge_ops(inv, vps), SshdPasswordsCheck(), seen])
        ports = {vps.http_port, *([vps.https_port] if vps.tls_certificate else [])}
        found = others_default_servers(known, ports)
        seen.describe = lambda _: default_server_note(found)
        ops: list[Op] = [*converge_ops(inv, vps, claim_default=not found), SshdPasswordsCheck(), seen]
        # the account first: one pitunnel did not make is refused before anything (Nginx too) is touched
        account = [op for op in ops if isinstance(op, SystemUser)]
        first = converge(remote, [*account, packages], play.reporter, play.options.mode, known=known)
        # installing Nginx adds files (its default site, its config) the rest must see as they are now
        installed = first.changes(packages) and not play.options.check
        rest = [op for op in ops if not isinstance(op, SystemUser)]
        converge(remote, rest, play.reporter, play.options.mode, handlers(remote), known=None if installed else known)

    play.each(play.selected(list(inv.vps.values())), work)


def teardown(play: Play, *, purge: bool) -> None:
    inv = play.inventory

    def work(remote: Remote) -> None:
        converge(remote, teardown_ops(inv.vps[remote.name], purge=purge), play.reporter, play.options.mode,
                 handlers(remote))

    play.each(play.selected(list(inv.vps.values())), work)
