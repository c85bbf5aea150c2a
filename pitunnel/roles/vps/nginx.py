"""The VPS's Nginx: the HTTP routes the tunnels make, what the templates see of each, the config files
rendered for them, and Debian's default site and the other default servers pitunnel's own must not fight."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitunnel.facts import Fact, Facts
from pitunnel.inventory import NAME_RE, Inventory, VpsSpec, acme_name
from pitunnel.ops import STATE_DIR, Absent, File, Op, Plan, Pruned, backup_commands, q
from pitunnel.roles.contract import realm
from pitunnel.roles.vps.acme import AcmeFound, live_paths
from pitunnel.roles.vps.role import VPS_DEFAULTS, ROLE
from pitunnel.roles.vps.statuspage import AUTH_FILE, LOCATION_FILE


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


def http_routes(inv: Inventory, vps: VpsSpec) -> list[HttpRoute]:
    routes = []
    for pi, tunnel in inv.tunnels_on(vps):
        if tunnel.kind != "http" or pi.name in inv.revoked:  # a revoked Pi's routes stay off until it is back
            continue
        stem = route_stem(pi.name, tunnel.name)
        auth = f"{VPS_DEFAULTS['nginx_auth_dir']}/{stem}.htpasswd" if tunnel.basic_auth_file else None
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
p={q(VPS_DEFAULTS['nginx_debian_default'])}
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
        path = VPS_DEFAULTS["nginx_debian_default"]
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
        path = VPS_DEFAULTS["nginx_debian_default"]
        cmds = [f"if [ -e {q(DEBIAN_SITE)} ] && ! [ -e {q(path)} ] && ! [ -L {q(path)} ]; then "
                f"ln -s {q(DEBIAN_SITE)} {q(path)}; fi",
                f"rm -f {q(SET_ASIDE_RECORD)}", f"rmdir {STATE_DIR} 2>/dev/null || true"]
        return Plan([*backup_commands(path), *cmds], "link back (pitunnel set it aside)", backups=[path])


@dataclass(frozen=True)
class DefaultListen:
    """A `listen ... default_server` line of a file, by its port (80 where the line names none)."""

    path: str
    port: int


def listen_port(directive: str) -> int:
    """The port of a `listen` directive's address (`80`, `*:8080`, `[::]:443`); 80 where it names none."""
    _keyword, address = [*directive.replace(";", " ").split(), "", ""][:2]
    port = address.rsplit(":", 1)[-1] if not address.endswith("]") else "80"
    return int(port) if port.isdigit() else 80


def default_listens(output: str) -> tuple[DefaultListen, ...]:
    """Each line `path listen ...` of the fact below."""
    return tuple(DefaultListen(path, listen_port(listen))
                 for path, _, listen in (line.partition(" ") for line in output.splitlines()))


# `listen ... default_server` lines in the enabled Nginx configuration that is not pitunnel's.
DEFAULT_SERVERS_FACT = Fact("nginx-default-servers", f"""\
for f in {VPS_DEFAULTS['nginx_sites_dir']}/* /etc/nginx/conf.d/*.conf; do
  [ -f "$f" ] || continue
  case "$f" in {VPS_DEFAULTS['nginx_default_site']} | {VPS_DEFAULTS['nginx_sites_dir']}/pitunnel-*.conf | {VPS_DEFAULTS['nginx_conf']}) continue ;; esac
  grep -E '^[[:space:]]*listen[[:space:]][^#;]*[[:space:]]default(_server)?([[:space:];]|$)' "$f" | sed "s|^|$f |"
done; true""", default_listens)


def others_default_servers(facts: Facts, ports: set[int]) -> list[str]:
    """Files, not pitunnel's, that make a server the default one on one of `ports` (Debian's unmodified
    default site does not count: it is set aside)."""
    found = []
    untouched = facts.value(DEBIAN_DEFAULT_FACT).untouched
    for listen in facts.value(DEFAULT_SERVERS_FACT):
        if listen.path == VPS_DEFAULTS["nginx_debian_default"] and untouched:
            continue
        if listen.port in ports and listen.path not in found:
            found.append(listen.path)
    return found


def default_server_note(found: list[str]) -> str:
    if not found:
        return "pitunnel's path-prefix server is the default server"
    return (f"yours is ({', '.join(found)}): pitunnel's path-prefix server does not claim default_server, so "
            f"path tunnels answer only for requests your default server does not take (use server_name tunnels)")


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


def nginx_ops(routes: list[HttpRoute], variables: dict[str, Any]) -> list[Op]:
    """Nginx's config for the routes, rendered with the VPS's template `variables` (steps.context): each
    route's basic auth file, the upstreams, a site per server_name route, a location per path route, the files
    of routes gone pruned, Debian's default site set aside, and the server for the path-prefix routes."""
    tunnels = {(t["pi"], t["name"]): t for t in variables["tunnels"]}
    page = {"location": {LOCATION_FILE}, "auth": {AUTH_FILE}} if variables.get("status_page") else {"location": set(), "auth": set()}
    ops: list[Op] = []
    for r in routes:
        if r.auth_source is not None and r.auth_file is not None:
            ops.append(File(r.auth_file, r.auth_source.read_text(), group="www-data", mode=0o640, secret=True,
                            notify=("reload nginx",), title=f"basic auth for {r.pi}/{r.name}"))
    ops.append(File(VPS_DEFAULTS["nginx_conf"], ROLE.render("nginx-http.conf.j2", **variables),
                    notify=("reload nginx",), title="nginx upstreams for the tunnels"))
    for r in routes:
        if r.server_name:
            ops.append(File(f"{VPS_DEFAULTS['nginx_sites_dir']}/pitunnel-{r.file_stem}.conf",
                            ROLE.render("nginx-server.conf.j2", t=tunnels[r.pi, r.name], **variables), notify=("reload nginx",),
                            title=f"nginx site {r.server_name} -> {r.pi}/{r.name}"))
        else:
            ops.append(File(f"{VPS_DEFAULTS['nginx_locations_dir']}/{r.file_stem}.conf",
                            ROLE.render("nginx-location.conf.j2", t=tunnels[r.pi, r.name], **variables), notify=("reload nginx",),
                            title=f"nginx path {r.path} -> {r.pi}/{r.name}"))
    ops += [
        Pruned(VPS_DEFAULTS["nginx_sites_dir"], "pitunnel-*.conf",
               frozenset(f"pitunnel-{r.file_stem}.conf" for r in routes if r.server_name), notify=("reload nginx",)),
        # the status page's files (statuspage.py) are kept while the inventory asks for the page
        Pruned(VPS_DEFAULTS["nginx_locations_dir"], "*.conf",
               frozenset({f"{r.file_stem}.conf" for r in routes if not r.server_name} | page["location"]), notify=("reload nginx",)),
        Pruned(VPS_DEFAULTS["nginx_auth_dir"], "*.htpasswd",
               frozenset({f"{r.file_stem}.htpasswd" for r in routes if r.auth_file} | page["auth"]), notify=("reload nginx",)),
        DebianDefaultSetAside(),
        File(VPS_DEFAULTS["nginx_default_site"], ROLE.render("nginx-default-site.conf.j2", **variables),
             notify=("reload nginx",), title="nginx server for path-prefix tunnels"),
    ]
    return ops


def nginx_absent_ops() -> list[Op]:
    """Teardown: pitunnel's Nginx config gone, and Debian's default site back if pitunnel set it aside."""
    return [Absent(VPS_DEFAULTS["nginx_default_site"], notify=("reload nginx",)),
            Pruned(VPS_DEFAULTS["nginx_sites_dir"], "pitunnel-*.conf", frozenset(), notify=("reload nginx",)),
            Absent(VPS_DEFAULTS["nginx_conf"], notify=("reload nginx",)),
            Absent("/etc/nginx/pitunnel", notify=("reload nginx",)),
            DebianDefaultRestored()]
