"""Checks across keys and hosts, on the values that passed their own checks: TLS pairs, accounts, each Pi's VPS,
options of the other tunnel type, host names, and clashes of ports and http routes on a VPS."""

from __future__ import annotations

import difflib
from collections.abc import Container, Iterable, Mapping
from typing import Any, Final

from pitunnel.yamlsrc import KeyPath

from .errors import Problems, dotted
from .fields import HTTP_ONLY_KEYS
from .model import AUTO_PORT, PiPath, PiSpec, TunnelSpec, VpsSpec, has_tls

# The login accounts of common server and Raspberry Pi images: somebody's account, never pitunnel's to take over.
IMAGE_LOGINS: Final = frozenset({
    "pi", "admin", "ubuntu", "debian", "ec2-user", "centos", "fedora", "rocky", "almalinux", "opc", "azureuser",
    "cloud-user", "core", "alpine", "arch", "vagrant", "dietpi", "user",
})
_OWN_ACCOUNT: Final = "use an account only pitunnel uses, such as 'pitunnel'"


def _image_login(user: str) -> str:
    return (f"'{user}' is the login account of common server and Raspberry Pi images: pitunnel would take it over "
            "(move its home) and delete it on teardown")


def vps_agrees(report: Problems, values: Mapping[str, Any], path: KeyPath) -> bool:
    """The VPS's keys that must agree with each other do (those of `values`: the valid ones)."""
    certificate, key = values.get("tls_certificate", False), values.get("tls_key", False)
    if False not in (certificate, key) and (certificate is None) != (key is None):
        missing = "tls_key" if key is None else "tls_certificate"
        other = "tls_certificate" if missing == "tls_key" else "tls_key"
        report.problem(path + (missing,), f"'{missing}' is missing while '{other}' is set",
                       "set both tls_certificate and tls_key, or neither")
        return False
    tunnel_user = values.get("tunnel_user")
    if tunnel_user is not None and tunnel_user == values.get("user"):
        other = "tunnel" if tunnel_user == "pitunnel" else "pitunnel"
        report.problem(path + ("tunnel_user",), f"the tunnel account '{tunnel_user}' is also the login user",
                       f"give the tunnels an account of their own (tunnel_user: {other}), or log in as another user")
        return False
    if tunnel_user in IMAGE_LOGINS:
        report.problem(path + ("tunnel_user",), _image_login(tunnel_user), _OWN_ACCOUNT)
        return False
    return True


def pi_login_taken(report: Problems, values: Mapping[str, Any], path: KeyPath) -> bool:
    """Whether the Pi's tunnel_user is an image's login account other than the Pi's own login user (reported
    if the login user is known). `values` holds the valid ones of the Pi's user and tunnel_user."""
    taken = values.get("tunnel_user") in IMAGE_LOGINS and values.get("tunnel_user") != values.get("user")
    if taken and "user" in values:
        report.problem(path + ("tunnel_user",), _image_login(values["tunnel_user"]),
                       _OWN_ACCOUNT + f", or the Pi's login user '{values['user']}'")
    return taken


def pi_vps(report: Problems, vps: tuple[str, ...] | None, path: KeyPath, vps_names: list[str]) -> tuple[str, ...] | None:
    """The names of the Pi's VPSes, or None if there is no good answer (reported unless there is no VPS)."""
    if vps is None:
        if len(vps_names) > 1:
            report.problem(path + ("vps",), "required key 'vps' is missing: there is more than one VPS",
                           "add 'vps: <name>' (or a list, 'vps: [a, b]') with " + ", ".join(vps_names))
        return (vps_names[0],) if len(vps_names) == 1 else None
    unknown = [name for name in vps if name not in vps_names]
    for name in unknown:
        if vps_names:
            close = difflib.get_close_matches(name, vps_names, n=1)
            report.problem(path + ("vps",), f"there is no VPS named '{name}'",
                           f"did you mean '{close[0]}'?" if close else "use one of: " + ", ".join(vps_names))
    return None if unknown else vps


def host_names(report: Problems, vps_names: Container[str], pi_names: Iterable[str]) -> None:
    """No Pi has a VPS's name."""
    for name in pi_names:
        if name in vps_names:
            report.problem(("pis", name), f"the name '{name}' is also used by a VPS{report.line(('vps', name))}",
                           "give every host its own name")


def tunnel_kind(report: Problems, raw: Mapping[str, Any], path: KeyPath) -> bool:
    """Options of one tunnel type must not appear on the other."""
    ok = True
    if raw.get("type") == "ssh":
        for key in HTTP_ONLY_KEYS:
            if key in raw:
                report.problem(path + (key,), f"'{key}' only applies to http tunnels",
                               "remove it, or make this an http tunnel with 'type: http'", at_key=True)
                ok = False
    elif raw.get("type") == "http" and raw.get("public") is True:
        report.problem(path + ("public",),
                       "an http tunnel cannot be public: nginx on the VPS proxies it from loopback",
                       "remove 'public: true' (nginx publishes it through server_name or path)")
        ok = False
    if raw.get("type") == "http" and raw.get("path") == "/" and raw.get("server_name") is None:
        report.problem(path + ("path",),
                       "path '/' is the VPS's default server's own catch-all (it answers 404 for unknown paths)",
                       "use a prefix such as /pi1/web/, or give the tunnel its own server_name")
        ok = False
    return ok


def ports_and_routes(report: Problems, vps: str, ports: Mapping[str, int], tunnels: list[tuple[str, TunnelSpec]]) -> None:
    """Each port on the VPS has one user; each http route one tunnel.

    `ports` holds the VPS's valid port, http_port and https_port, and metrics_address's port when metrics are
    on; `tunnels` its Pis' valid tunnels."""
    users: dict[int, KeyPath] = {}
    for key in ("port", "http_port", "https_port", "metrics_address"):
        if key not in ports:
            continue
        where = ("vps", vps, key)
        port = ports[key]
        if port in users:
            report.problem(where, f"port {port} is also the VPS's {users[port][-1]}{report.line(users[port])}",
                           "give metrics_address a port nothing else on the VPS uses" if key == "metrics_address"
                           else "give port, http_port and https_port different values")
        users.setdefault(port, where)
    routes: dict[str, KeyPath] = {}  # path prefix in the default server -> tunnel
    names: dict[str, KeyPath] = {}  # server_name -> tunnel (nginx compares them without case)
    for pi, tunnel in tunnels:
        path: KeyPath = ("pis", pi, "tunnels", tunnel.name)
        port = tunnel.remote_port
        if port != AUTO_PORT and port in users:
            other = users[port]
            report.problem(path + ("remote_port",),
                           f"port {port} on VPS '{vps}' is already used by {dotted(other)}{report.line(other)}",
                           "choose a port nothing else uses, or write 'remote_port: auto'")
        elif port != AUTO_PORT:
            users[port] = path + ("remote_port",)
        if tunnel.kind == "http" and tunnel.server_name is not None:
            name = tunnel.server_name.lower().rstrip(".")
            if name in names:
                report.problem(path + ("server_name",),
                               f"server_name {tunnel.server_name!r} on VPS '{vps}' is already used by "
                               f"{dotted(names[name])}{report.line(names[name])}: nginx would serve only one of them",
                               "give each http tunnel its own server_name (or route by path)")
            names.setdefault(name, path + ("server_name",))
        elif tunnel.kind == "http" and tunnel.path is not None:
            if tunnel.path in routes:
                report.problem(path + ("path",),
                               f"path {tunnel.path!r} on VPS '{vps}' is already routed to "
                               f"{dotted(routes[tunnel.path])}{report.line(routes[tunnel.path])}",
                               "give each http tunnel its own path or server_name")
            routes.setdefault(tunnel.path, path)


def tls_for_routes(report: Problems, vps: VpsSpec, pi: PiPath) -> None:
    """Basic auth and HSTS only on routes served over HTTPS: a password must never cross in clear. No
    route takes the VPS's public_name for its own server."""
    public = vps.public_name.lower().rstrip(".") if vps.public_name else None
    for tunnel in pi.tunnels:
        path: KeyPath = ("pis", pi.name, "tunnels", tunnel.name)
        if tunnel.kind == "http" and tunnel.server_name and tunnel.server_name.lower().rstrip(".") == public:
            report.problem(path + ("server_name",), f"server_name {tunnel.server_name!r} is VPS '{vps.name}''s "
                           "public_name, whose server routes the path-prefix tunnels: nginx would serve only one",
                           "give the tunnel a name of its own, or route it by path under the public_name")
        if tunnel.kind != "http" or has_tls(vps, tunnel):
            continue
        if tunnel.server_name is not None and tunnel.server_name.startswith("*."):
            how = (f"give VPS '{vps.name}' tls_certificate and tls_key (ACME's http-01 cannot prove a wildcard "
                   f"name), or remove")
        elif tunnel.server_name is not None:
            how = f"give VPS '{vps.name}' an 'acme:' setting (or tls_certificate and tls_key), or remove"
        else:
            how = (f"give VPS '{vps.name}' 'public_name' and 'acme:' (or tls_certificate and tls_key), or give the "
                   f"tunnel a server_name, or remove")
        if tunnel.basic_auth_file is not None:
            report.problem(path + ("basic_auth_file",),
                           "basic auth on a route without TLS would send its passwords in clear over plain HTTP",
                           f"{how} basic_auth_file")
        if tunnel.hsts:
            report.problem(path + ("hsts",), "'hsts: true' on a route without TLS (HSTS is only sent over HTTPS)",
                           f"{how} hsts")


def status_page(report: Problems, vps: VpsSpec, tunnels: list[tuple[str, TunnelSpec]]) -> None:
    """The status page asks for a password: only over HTTPS (the VPS's public_name with `acme:`, or its
    tls_certificate); and its path is no path route's, nor inside one, nor around one."""
    page = vps.status_page
    if page is None:
        return
    where: KeyPath = ("vps", vps.name, "status_page")
    if not (vps.tls_certificate and vps.tls_key) and not (vps.acme and vps.public_name):
        report.problem(where, "the status page asks for a password (basic auth), which would cross in clear over "
                       "plain HTTP", f"give VPS '{vps.name}' 'public_name' and 'acme:' (or tls_certificate and "
                       "tls_key), or remove status_page")
    for pi, tunnel in tunnels:
        if tunnel.kind == "http" and tunnel.server_name is None and tunnel.path is not None and \
                (tunnel.path.startswith(page.path) or page.path.startswith(tunnel.path)):
            other: KeyPath = ("pis", pi, "tunnels", tunnel.name, "path")
            report.problem(where + ("path",), f"the status page's path {page.path!r} on VPS '{vps.name}' overlaps "
                           f"{dotted(other)}'s {tunnel.path!r}{report.line(other)}",
                           "give status_page a path of its own, e.g. /fleet-status/")


def plain_http_names(vpses: Mapping[str, VpsSpec], pis: Iterable[PiSpec]) -> list[str]:
    """A warning per http route with a server_name that its VPS would serve over plain HTTP (no `acme:` that can
    prove the name, no tls_certificate): HTTPS is the default wherever a route has a name (README)."""
    return [f"{pi.name}/{t.name}: {t.server_name} is served over plain HTTP by {vps.name}, which has neither `acme:` "
            f"for it nor tls_certificate. Fix: give vps.{vps.name} `acme: {{email: ...}}` (docs/https.md; a "
            "wildcard name needs tls_certificate and tls_key)"
            for pi in pis for path in pi.paths() for vps in (vpses[path.vps],) for t in path.tunnels
            if t.kind == "http" and t.server_name and not has_tls(vps, t)]
