"""The VPS's status page (`status_page:`): the generator the metrics writer runs (statusgen.py, copied as it is),
what it needs of the inventory, the page's basic auth and its Nginx location in pitunnel's path-prefix server;
and all of it gone, its history too, when the inventory no longer asks for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pitunnel.inventory import VpsSpec
from pitunnel.ops import Absent, File, Op
from pitunnel.roles.vps import statusgen
from pitunnel.roles.vps.role import VPS_DEFAULTS, ROLE

AUTH_FILE = "status-page.htpasswd"  # in nginx_auth_dir: no '_', so never a route's PI_TUNNEL name
LOCATION_FILE = "status-page.conf"  # in nginx_locations_dir, likewise


def page_vars(vps: VpsSpec) -> dict[str, str] | None:
    """The status page as the templates see it (`status_page`); None when the inventory asks for none."""
    if vps.status_page is None:
        return None
    return dict(path=vps.status_page.path, auth_file=f"{VPS_DEFAULTS['nginx_auth_dir']}/{AUTH_FILE}",
                www=f"{VPS_DEFAULTS['status_page_state']}/www", state=VPS_DEFAULTS["status_page_state"],
                script=VPS_DEFAULTS["status_page_script"], config=VPS_DEFAULTS["status_page_config"])


def certificates(variables: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, certificate file) of each certificate this VPS's Nginx serves for pitunnel, once each."""
    found = {}
    if variables.get("site_tls"):
        found[variables.get("public_name") or "path-prefix server"] = variables["site_tls"]["certificate"]
    for t in variables["tunnels"]:
        if t["tls"] and t["server_name"]:
            found.setdefault(t["server_name"], t["tls"]["certificate"])
    return sorted(found.items())


def status_page_ops(vps: VpsSpec, variables: dict[str, Any]) -> list[Op]:
    """`status_page:` on: the generator, its config, the page's basic auth and its Nginx location (the metrics
    writer runs it: metrics.py); off: the generator, its config and the page's history gone (the location and
    the auth file are pruned with the routes' own: nginx.py)."""
    page = variables["status_page"]
    if vps.status_page is None or page is None:
        return status_page_absent_ops()
    config = dict(vps=vps.name, state_dir=page["state"], certificates=certificates(variables))
    return [
        File(page["script"], Path(statusgen.__file__).read_text(), mode=0o755, notify=("restart metrics",),
             title="status page generator"),
        File(page["config"], json.dumps(config, indent=1) + "\n", title="status page settings"),
        File(page["auth_file"], vps.status_page.basic_auth_file.read_text(), group="www-data", mode=0o640,
             secret=True, notify=("reload nginx",), title="basic auth for the status page"),
        File(f"{VPS_DEFAULTS['nginx_locations_dir']}/{LOCATION_FILE}", ROLE.render("nginx-status.conf.j2", **variables),
             notify=("reload nginx",), title=f"nginx path {page['path']} -> status page"),
    ]


def status_page_absent_ops() -> list[Op]:
    """No status page: its generator, settings and history (page included) gone, if they were there."""
    return [Absent(VPS_DEFAULTS["status_page_script"]), Absent(VPS_DEFAULTS["status_page_config"]),
            Absent(VPS_DEFAULTS["status_page_state"])]
