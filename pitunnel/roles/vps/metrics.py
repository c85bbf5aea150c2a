"""The VPS's metrics (`metrics:`): the node exporter, and pitunnel's tunnel metrics for its textfile collector."""

from __future__ import annotations

from collections.abc import Sequence

from pitunnel.inventory import Inventory, VpsSpec
from pitunnel.ops import Absent, File, Op, PackagesAbsent, Service
from pitunnel.roles.contract import listen_spec
from pitunnel.roles.vps.role import VPS_DEFAULTS, ROLE
from pitunnel.roles.vps.statuspage import page_vars


def metrics_ops(inv: Inventory, vps: VpsSpec, certificates: Sequence[tuple[str, str]] = ()) -> list[Op]:
    """`metrics: true`: the node exporter where the inventory says, and pitunnel's metrics for its textfile
    collector, written by a service of the VPS's own; `metrics: false`: none of pitunnel's pieces, and
    the exporter purged if pitunnel installed it (one that was there before stays, as it was). That service,
    the metrics writer, also runs for `status_page:` alone: it makes the page (statuspage.py). `certificates`:
    (name, file) of each certificate pitunnel's Nginx serves, whose expiry the metrics carry."""
    if not vps.metrics and vps.status_page is None:
        return [*metrics_absent_ops(), PackagesAbsent((VPS_DEFAULTS["metrics_package"],))]
    tunnels = [dict(pi=pi.name, tunnel=t.name, listen=listen_spec(t)) for pi, t in inv.tunnels_on(vps)]
    variables = dict(metrics_address=vps.metrics_address, metrics_tunnels=tunnels, metrics_vps=vps.name,
                     metrics_tunnel_user=vps.tunnel_user,
                     metrics=vps.metrics, status_page=page_vars(vps), metrics_certificates=list(certificates))
    exporter: list[Op] = [
        File(VPS_DEFAULTS["metrics_dropin"], ROLE.render("node-exporter.conf.j2", **variables), notify=("restart node exporter",),
             title=f"node exporter on {vps.metrics_address}, textfile collector on"),
        Service(VPS_DEFAULTS["metrics_service"], covers=("restart node exporter",)),
    ] if vps.metrics else [*exporter_absent_ops(), PackagesAbsent((VPS_DEFAULTS["metrics_package"],))]
    return [
        *exporter,
        File(VPS_DEFAULTS["metrics_path"], ROLE.render("metrics.sh.j2", **variables), mode=0o755, notify=("restart metrics",),
             title="tunnel metrics writer script"),
        File(VPS_DEFAULTS["metrics_unit_path"], ROLE.render("metrics.service.j2", **variables), notify=("restart metrics",),
             title=f"systemd unit {VPS_DEFAULTS['metrics_unit']}"),
        Service(VPS_DEFAULTS["metrics_unit"], covers=("restart metrics",)),
    ]


def metrics_absent_ops() -> list[Op]:
    return [
        Service(VPS_DEFAULTS["metrics_unit"], enabled=False, running=False, title=f"service {VPS_DEFAULTS['metrics_unit']} stopped and disabled"),
        Absent(VPS_DEFAULTS["metrics_unit_path"], notify=("daemon-reload",)),
        Absent(VPS_DEFAULTS["metrics_path"]),
        *exporter_absent_ops(),
    ]


def exporter_absent_ops() -> list[Op]:
    """pitunnel's metrics file and its node exporter settings gone (the writer may stay, for the status page)."""
    return [
        Absent(f"{VPS_DEFAULTS['metrics_textfile_dir']}/pitunnel.prom"),
        Absent(VPS_DEFAULTS["metrics_dropin"], notify=("restart node exporter if there",)),
    ]
