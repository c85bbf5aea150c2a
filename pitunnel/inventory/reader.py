"""Reads a parsed inventory document into specs, section by section, collecting every problem on the way."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pitunnel.yamlsrc import KeyPath

from . import checks, fields, values
from .errors import Invalid, Problems, show
from .fields import FieldChecker, Inherited
from .files import public_key
from .model import KEEPALIVE, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, AcmeSpec, PiSpec, metrics_port, Settings, StatusPageSpec, TunnelSpec, VpsSpec

ALIVE_KEYS = ("client_alive_interval", "client_alive_count_max")

Read = tuple[Settings | None, dict[str, VpsSpec], dict[str, PiSpec]]


def read(report: Problems, base: Path) -> Read | None:
    """The settings (None if invalid), the valid VPSes and the valid Pis of `report`'s document; every problem
    goes to `report`. None if the document is not an inventory at all."""
    return _Reader(report, base).read()


class _Reader:
    def __init__(self, report: Problems, base: Path) -> None:
        self.report = report
        self.schema = FieldChecker(report, base)
        # what the cross-checks see, even of hosts and tunnels with other problems (so all are reported at once)
        self.vps_ports: dict[str, dict[str, int]] = {}  # VPS -> its valid port, http_port, https_port
        self.alive_unset: dict[str, list[str]] = {}  # per VPS: its ClientAlive keys the inventory leaves out
        self.routed: list[tuple[str, str, TunnelSpec]] = []  # (pi, each of its VPSes, tunnel) of every valid tunnel

    def read(self) -> Read | None:
        top = self.report.doc.data
        if top is None:
            self.report.problem((), "the inventory is empty",
                                "describe your VPS and Pis, starting from inventory/example.yml")
            return None
        if not isinstance(top, dict):
            self.report.problem((), f"expected a mapping at the top level, got {show(top)}",
                                "use the top-level keys settings, defaults, vps and pis (see inventory/example.yml)")
            return None
        self.schema.unknown_keys(top, (), fields.SECTION_FIELDS)
        settings = self.settings(self.section(top, "settings"))
        defaults = self.section(top, "defaults")
        self.schema.unknown_keys(defaults, ("defaults",), fields.DEFAULTS_KEYS)
        inherited = {key: (value, ("defaults", key)) for key, value in defaults.items()
                     if key in fields.DEFAULTS_KEYS}
        vps_section = self.section(top, "vps")
        if not top.get("vps"):
            self.report.problem(("vps",), "no VPS is defined",
                                "add one under 'vps:', e.g. 'vps: {main: {address: vps.example.com}}'")
        vps = self.all_vps(vps_section, inherited)
        pis_section = self.section(top, "pis")
        pis = self.pis(pis_section, inherited, list(vps_section))
        vps = {name: self.client_alive(spec, [pi for pi in pis.values() if name in pi.all_vps])
               for name, spec in vps.items()}
        checks.host_names(self.report, vps_section, pis_section)
        for pi in pis.values():
            for through in pi.paths():  # the Pi through each of its VPSes (`path` is a key path here)
                if through.vps in vps:
                    checks.tls_for_routes(self.report, vps[through.vps], through)
        for vps_name, ports in self.vps_ports.items():
            checks.ports_and_routes(self.report, vps_name, ports,
                                    [(pi, t) for pi, on, t in self.routed if on == vps_name])
        for spec in vps.values():
            checks.status_page(self.report, spec, [(pi, t) for pi, on, t in self.routed if on == spec.name])
        return settings, vps, pis

    def section(self, top: Mapping[str, Any], key: str) -> dict[str, Any]:
        value = top.get(key)
        if value is None:
            return {}
        try:
            return values.mapping(value)
        except Invalid as e:
            self.report.problem((key,), e.message, e.fix)
            return {}

    def named(self, section: Mapping[str, Any], path: KeyPath) -> Iterable[tuple[str, dict[str, Any], KeyPath, bool]]:
        """The (name, mapping, path, name is valid) entries of a section, skipping non-mappings."""
        for name, raw in section.items():
            where = path + (name,)
            valid = True
            try:
                values.name(name)
            except Invalid as e:
                self.report.problem(where, e.message, e.fix, at_key=True)
                valid = False
            try:
                entry = values.mapping({} if raw is None else raw)
            except Invalid as e:
                self.report.problem(where, e.message, e.fix)
                continue
            yield name, entry, where, valid

    def settings(self, raw: Mapping[str, Any]) -> Settings | None:
        if raw.get("ssh_config") == "none":  # said out loud: no ssh config, as when the key is absent
            raw = {k: v for k, v in raw.items() if k != "ssh_config"}
        found = self.schema.check(raw, ("settings",), fields.SETTINGS_FIELDS)
        if found is None:
            return None
        key: Path | None = found["laptop_key"]
        if "laptop_key" not in raw:
            default = Path("~/.ssh/id_ed25519").expanduser()
            key = default if default.is_file() and public_key(default).is_file() else None
        elif key is not None and not public_key(key).is_file():
            self.report.problem(("settings", "laptop_key"), f"public key {public_key(key)} does not exist",
                                f"create it with 'ssh-keygen -y -f {key} > {public_key(key)}'")
            return None
        return Settings(known_hosts=found["known_hosts"], laptop_key=key, ssh_config=found["ssh_config"],
                        verify_ca_file=found["verify_ca_file"])

    def client_alive(self, vps: VpsSpec, pis: list[PiSpec]) -> VpsSpec:
        """The VPS's ClientAlive keys not written in the inventory: the slowest its Pis' keepalive asks for
        (one account serves them all, so a metered Pi's slow probes are not overridden by the VPS's own)."""
        presets = [KEEPALIVE[pi.keepalive] for pi in pis] or [KEEPALIVE["default"]]
        derived = {key: max(getattr(p, key) for p in presets) for key in self.alive_unset.get(vps.name, [])}
        return dataclasses.replace(vps, **derived) if derived else vps

    def all_vps(self, section: Mapping[str, Any], inherited: Inherited) -> dict[str, VpsSpec]:
        result: dict[str, VpsSpec] = {}
        for name, raw, path, name_ok in self.named(section, ("vps",)):
            found = self.schema.check(raw, path, fields.VPS_FIELDS, inherited)
            # keys that must agree are compared even if other keys are wrong (so every problem shows at once)
            quiet = self.schema.quiet(raw, fields.VPS_FIELDS, ("port", "http_port", "https_port", "user",
                                                               "tunnel_user", "tls_certificate", "tls_key",
                                                               "metrics", "metrics_address"), inherited)
            if name_ok:
                self.vps_ports[name] = {k: quiet[k] for k in ("port", "http_port", "https_port") if k in quiet}
                if quiet.get("metrics") and "metrics_address" in quiet:
                    self.vps_ports[name]["metrics_address"] = metrics_port(quiet["metrics_address"])
            acme = self.acme(raw.get("acme"), path + ("acme",))
            page = self.status_page(raw.get("status_page"), path + ("status_page",))
            if not checks.vps_agrees(self.report, quiet, path) or found is None or not name_ok or acme is False \
                    or page is False:
                continue
            found.update(acme=acme, status_page=page)
            self.alive_unset[name] = [k for k in ALIVE_KEYS if found.get(k) is None]
            result[name] = VpsSpec(name=name, role="vps", given=_given(raw, inherited, fields.VPS_FIELDS),
                                   **{k: v for k, v in found.items() if k not in self.alive_unset[name]})
        return result

    def acme(self, raw: Any, path: KeyPath) -> AcmeSpec | None | bool:
        """The VPS's `acme:` (None if absent), or False if it is invalid (reported)."""
        if not isinstance(raw, dict):
            return None  # absent, or not a mapping: reported with the VPS's other fields
        found = self.schema.check(raw, path, fields.ACME_FIELDS)
        if found is None:
            return False
        if found["staging"] and "directory" in raw:
            self.report.problem(path + ("staging",), "'staging: true' and 'directory' both choose the ACME directory",
                                "keep one: staging for Let's Encrypt's staging directory, or directory for another CA")
            return False
        if found["staging"]:
            found["directory"] = LETS_ENCRYPT_STAGING
        return AcmeSpec(**found)

    def status_page(self, raw: Any, path: KeyPath) -> StatusPageSpec | None | bool:
        """The VPS's `status_page:` (None if absent), or False if it is invalid (reported)."""
        if not isinstance(raw, dict):
            return None  # absent, or not a mapping: reported with the VPS's other fields
        found = self.schema.check(raw, path, fields.STATUS_PAGE_FIELDS)
        return False if found is None else StatusPageSpec(**found)

    def pis(self, section: Mapping[str, Any], inherited: Inherited, vps_names: list[str]) -> dict[str, PiSpec]:
        result: dict[str, PiSpec] = {}
        for name, raw, path, name_ok in self.named(section, ("pis",)):
            found = self.schema.check(raw, path, fields.PI_FIELDS, inherited)
            tunnels, valid_tunnels = self.tunnels(name, raw.get("tunnels"), path)  # checked even if the Pi is not
            quiet = self.schema.quiet(raw, fields.PI_FIELDS, ("vps", "user", "tunnel_user"), inherited)
            login_taken = checks.pi_login_taken(self.report, quiet, path)
            # the Pi's VPS is checked even if the Pi's other keys are not (and its valid tunnels are cross-checked)
            vps_invalid = "vps" in raw and "vps" not in quiet  # reported with the Pi's other keys
            vps = None if vps_invalid else checks.pi_vps(self.report, quiet.get("vps"), path, vps_names)
            if vps is not None and name_ok:
                self.routed += [(name, on, t) for on in vps for t in valid_tunnels]
            if found is None or tunnels is None or not name_ok or vps is None or login_taken:
                continue
            if found["address"] is None:  # an enrolled Pi: reached through its tunnel only
                if found["via"] == "direct":
                    self.report.problem(path + ("via",) if "via" in raw else ("defaults", "via"),
                                        f"'via: direct' needs the address of {name}, and it has none",
                                        "give it an address, or use 'via: tunnel' (or leave via out)")
                    continue
                if not any(t.kind == "ssh" for t in tunnels):
                    self.report.problem(path, f"{name} has no address, so the laptop reaches it through its ssh "
                                        "tunnel only, and it has none", "add a tunnel of 'type: ssh' under its "
                                        "tunnels, or give its address")
                    continue
                found.update(address=name, via="tunnel", tunnel_only=True)
            if found["via"] == "tunnel" and not any(t.kind == "ssh" for t in tunnels):
                self.report.problem(path + ("via",) if "via" in raw else ("defaults", "via"),
                                    f"'via: tunnel' needs an ssh tunnel on {name}, and it has none",
                                    "add a tunnel of 'type: ssh' under its tunnels, or use 'via: auto'")
                continue
            found.pop("vps")
            found["tunnels"] = tunnels
            preset = KEEPALIVE[found["keepalive"]]
            for key in ("server_alive_interval", "server_alive_count_max"):
                if found.get(key) is None:
                    found[key] = getattr(preset, key)
            result[name] = PiSpec(name=name, role="pi", vpses=vps,
                                  given=_given(raw, inherited, fields.PI_FIELDS), **found)
        return result

    def tunnels(self, pi: str, section: Any, pi_path: KeyPath) -> tuple[tuple[TunnelSpec, ...] | None,
                                                                         list[TunnelSpec]]:
        """The Pi's tunnels, or None if any is invalid; and the valid ones."""
        if not isinstance(section, dict):
            return (), []  # absent, or not a mapping: that is reported with the Pi's other fields
        result = []
        for name, raw, path, name_ok in self.named(section, pi_path + ("tunnels",)):
            found = self.schema.check(raw, path, fields.TUNNEL_FIELDS)
            kind_ok = checks.tunnel_kind(self.report, raw, path)
            if found is not None and kind_ok and name_ok:
                result.append(self.tunnel(pi, name, found))
        return (tuple(result) if len(result) == len(section) else None), result

    def tunnel(self, pi: str, name: str, found: dict[str, Any]) -> TunnelSpec:
        kind = found.pop("type")
        if kind == "http" and found["server_name"] is None and found["path"] is None:
            found["path"] = f"/{pi}/{name}/"
        if found["local_port"] is None:
            found["local_port"] = fields.DEFAULT_LOCAL_PORT[kind]
        return TunnelSpec(name=name, kind=kind, **found)


def _given(raw: Mapping[str, Any], inherited: Inherited, table: Mapping[str, Any]) -> frozenset[str]:
    """The keys of `table` the inventory wrote for a host, itself or under defaults: (where an ssh config
    may say something, these win)."""
    return frozenset(key for key in table if key in raw or key in inherited)
