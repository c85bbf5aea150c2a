"""Certificates from an ACME CA on the VPS: Debian's certbot, the http-01 challenge through pitunnel's Nginx.

certbot's webroot plugin, not its nginx plugin: the nginx plugin rewrites server blocks to add its own
`listen 443 ssl` and redirects, and would fight pitunnel over files pitunnel writes and prunes. With
--webroot, certbot only drops challenge files in a folder every pitunnel server on port 80 serves (Pi up
or not) and keeps its certificates under /etc/letsencrypt; the Nginx config stays pitunnel's alone.

A certificate is pitunnel's when its certbot --cert-name is pitunnel-<name> and it is recorded in
STATE_DIR/acme-certs when obtained; teardown touches only those.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pitunnel.facts import Fact, Facts
from pitunnel.inventory import AcmeSpec, VpsSpec
from pitunnel.ops import Op, Plan, q, record_commands, record_fact, recorded, unrecord_commands
from pitunnel.roles.vps.role import VPS_DEFAULTS

LE = VPS_DEFAULTS["letsencrypt_dir"]
KEPT = VPS_DEFAULTS["acme_kept_dir"]
# run after each renewal (stored by certbot in the renewal file): Nginx serves the new certificate, once
# its configuration is proven valid
DEPLOY_HOOK = "nginx -t -q && systemctl reload nginx"


def cert_name(name: str) -> str:
    """certbot's --cert-name for `name`'s certificate."""
    return f"{VPS_DEFAULTS['acme_cert_prefix']}{name}"


def live_paths(name: str) -> dict[str, str]:
    """Where certbot keeps `name`'s current certificate chain and key (links it updates on renewal)."""
    return dict(certificate=f"{LE}/live/{cert_name(name)}/fullchain.pem", key=f"{LE}/live/{cert_name(name)}/privkey.pem")


@dataclass(frozen=True)
class CertState:
    """One of pitunnel's certificates as found on the VPS."""

    server: str  # the ACME directory its renewal file names ("" without one)
    live: bool  # certbot's live/ chain is there
    kept: bool  # its renewal file was set aside by teardown (certificate kept, renewal stopped)
    not_after: str  # its expiry as openssl prints it ("" if unknown)


@dataclass(frozen=True)
class AcmeFound:
    certs: dict[str, CertState] = field(default_factory=dict)  # by name (without the prefix)
    given_not_after: str = ""  # expiry of the VPS's hand-given tls_certificate


def parse(output: str) -> AcmeFound:
    certs: dict[str, CertState] = {}
    given = ""
    for line in output.splitlines():
        parts = line.split("|")
        if parts[0] == "GIVEN" and len(parts) == 2:
            given = parts[1].strip()
        elif len(parts) == 5 and parts[0].startswith(VPS_DEFAULTS["acme_cert_prefix"]):
            full, server, live, kept, not_after = parts
            certs[full[len(VPS_DEFAULTS["acme_cert_prefix"]):]] = CertState(server.strip(), live == "yes", kept == "yes",
                                                                  not_after.strip())
    return AcmeFound(certs, given)


def acme_fact(vps: VpsSpec) -> Fact[AcmeFound]:
    """pitunnel's certificates on the VPS (live, renewing or set aside), each with its expiry; and the expiry of
    the hand-given certificate, if any. Reads files only: never calls the CA."""
    p = VPS_DEFAULTS["acme_cert_prefix"]
    given = (f"echo \"GIVEN|$(openssl x509 -noout -enddate -in {q(vps.tls_certificate)} 2>/dev/null | cut -d= -f2)\"\n"
             if vps.tls_certificate else "")
    return Fact(f"acme-certs:{vps.tls_certificate}", f"""\
for f in {LE}/live/{p}* {LE}/renewal/{p}*.conf {KEPT}/{p}*.conf; do [ -e "$f" ] && basename "$f" .conf; done | sort -u |
while read -r n; do
  conf={LE}/renewal/$n.conf; k=no
  if ! [ -e "$conf" ] && [ -e {KEPT}/$n.conf ]; then conf={KEPT}/$n.conf; k=yes; fi
  s=$(sed -n 's/^server *= *//p' "$conf" 2>/dev/null | head -1)
  l=no; [ -s {LE}/live/$n/fullchain.pem ] && l=yes
  e=$(openssl x509 -noout -enddate -in {LE}/live/$n/cert.pem 2>/dev/null | cut -d= -f2)
  echo "$n|$s|$l|$k|$e"
done
{given}true""", parse)


def certbot_env(acme: AcmeSpec) -> str:
    return f"REQUESTS_CA_BUNDLE={q(VPS_DEFAULTS['acme_ca_bundle'])} " if acme.ca_bundle is not None else ""


def one_line_failure(name: str) -> str:
    """After `out=$(certbot ...)` failed: the CA's reason in one line (certbot's `Detail:`, else its last line)."""
    return ("reason=$(printf '%s\\n' \"$out\" | sed -n 's/^ *Detail: *//p' | head -1); "
            "[ -n \"$reason\" ] || reason=$(printf '%s\\n' \"$out\" | grep -v -e '^ *$' -e '^Ask for help' "
            "-e '^Saving debug log' | tail -1); "
            f"echo \"certbot could not get a certificate for {name}: $reason\"; exit 1")


@dataclass
class Certificate(Op):
    """`name` has a certificate from the VPS's ACME directory: obtained by certbot (http-01, webroot) if it
    has none from there; one teardown set aside is renewed again without asking the CA."""

    name: str
    acme: AcmeSpec
    vps: VpsSpec
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"certificate {self.name} (ACME)"

    def facts(self) -> list[Fact[Any]]:
        return [acme_fact(self.vps)]

    def plan(self, facts: Facts) -> Plan:
        state = facts.value(acme_fact(self.vps)).certs.get(self.name)
        cn = cert_name(self.name)
        if state is not None and state.live and state.server == self.acme.directory:
            if not state.kept:
                return Plan([], f"valid until {state.not_after or '?'}; certbot's timer renews it")
            return Plan([f"mv -f {q(f'{KEPT}/{cn}.conf')} {q(f'{LE}/renewal/{cn}.conf')}",
                         f"rmdir {q(KEPT)} 2>/dev/null || true"],
                        "kept by an earlier teardown: renewal back on (no call to the CA)")
        account = record_commands("acme", ["account"])
        certbot = (f"{certbot_env(self.acme)}certbot certonly --non-interactive --agree-tos --no-eff-email "
                   f"-m {q(self.acme.email)} --server {q(self.acme.directory)} --webroot -w {q(VPS_DEFAULTS['acme_webroot'])} "
                   f"--cert-name {q(cn)} -d {q(self.name)} --deploy-hook {q(DEPLOY_HOOK)}")
        why = "obtain from " + self.acme.directory
        if state is not None and state.live:  # from another directory (staging, another CA): a new one from this
            certbot += " --force-renewal"
            why = f"replace the one from {state.server or 'an unknown directory'}: obtain from {self.acme.directory}"
        if state is not None and state.kept:  # set aside, from another directory: certbot needs its renewal file
            certbot = f"mv -f {q(f'{KEPT}/{cn}.conf')} {q(f'{LE}/renewal/{cn}.conf')}; {certbot}"
        return Plan([f"if [ ! -d {LE}/accounts ]; then {'; '.join(account)}; fi",
                     f"if ! out=$({certbot} 2>&1); then {one_line_failure(self.name)}; fi",
                     *record_commands("acme-certs", [cn])], why)


@dataclass
class CertificatesReleased(Op):
    """Teardown: pitunnel's certificates stop renewing (their renewal files set aside; the certificates and
    the ACME account stay, as a CA rate-limits new ones); with `purge`, they and the account pitunnel made go."""

    purge: bool
    vps: VpsSpec
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or ("certificates and ACME account removed" if self.purge else "certificate renewal stopped")

    def facts(self) -> list[Fact[Any]]:
        return [acme_fact(self.vps), record_fact("acme-certs"), record_fact("acme")]

    def plan(self, facts: Facts) -> Plan:
        ours = recorded(facts, "acme-certs")
        found = {cert_name(n): s for n, s in facts.value(acme_fact(self.vps)).certs.items() if cert_name(n) in ours}
        account = "account" in recorded(facts, "acme")
        if self.purge:
            cmds = [f"rm -rf {q(f'{LE}/live/{cn}')} {q(f'{LE}/archive/{cn}')} {q(f'{LE}/renewal/{cn}.conf')} "
                    f"{q(f'{KEPT}/{cn}.conf')}" for cn in found]
            cmds += [f"rmdir {q(KEPT)} 2>/dev/null || true"]
            if account:
                cmds += [f"rm -rf {LE}/accounts", *unrecord_commands("acme", ["account"])]
            if not found and not account and not ours:
                return Plan([], "none of pitunnel's")
            return Plan([*cmds, *unrecord_commands("acme-certs", sorted(ours))],
                        f"remove {len(found)} certificates" + (" and the ACME account pitunnel made" if account else ""))
        renewing = [cn for cn, s in found.items() if not s.kept]
        if not renewing:
            return Plan([], "no certificate of pitunnel's renews" + (" (kept: --purge removes them)" if found else ""))
        return Plan([f"mkdir -p {q(KEPT)} && chmod 700 {q(KEPT)}",
                     *(f"mv -f {q(f'{LE}/renewal/{cn}.conf')} {q(f'{KEPT}/{cn}.conf')}" for cn in renewing)],
                    f"renewal of {', '.join(renewing)} stopped; certificates and account kept (--purge removes them: "
                    "a CA rate-limits new certificates)")


def folder(output: str) -> frozenset[str] | None:
    """The names in a folder (`ls -A`); None: no folder."""
    found = output.split()
    return None if found == ["ABSENT"] else frozenset(found)


@dataclass
class FolderGone(Op):
    """Teardown: a folder pitunnel's files were put in goes, if nothing but those (`ours`, removed by ops
    before this one) is in it: a drop-in folder the user also uses stays."""

    path: str
    ours: frozenset[str]
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"folder {self.path} gone if empty"

    def fact(self) -> Fact[frozenset[str] | None]:
        return Fact(f"folder:{self.path}", f"[ -d {q(self.path)} ] && ls -A {q(self.path)} || echo ABSENT", folder)

    def facts(self) -> list[Fact[Any]]:
        return [self.fact()]

    def plan(self, facts: Facts) -> Plan:
        found = facts.value(self.fact())
        if found is None:
            return Plan([], "not there")
        if found - self.ours:
            return Plan([], "kept: it holds files that are not pitunnel's")
        return Plan([f"rmdir {q(self.path)}"], "remove (empty once pitunnel's files are gone)")
