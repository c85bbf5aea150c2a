"""HTTPS by ACME (issue 14), without hosts: the inventory's acme/public_name/hsts keys and their checks, the Nginx
config rendered before and after certbot has a name's certificate, and the certbot commands pitunnel plans."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from pitunnel.facts import Facts
from pitunnel.inventory import LETS_ENCRYPT_STAGING, Inventory, InventoryError, load_inventory
from pitunnel.ops import File, Op, record_fact
from pitunnel.roles.site import provision_vps
from pitunnel.roles.vps import acme
from pitunnel.roles.vps import role as vps_role
from pitunnel.roles.vps import steps as vps_steps

D = vps_role.VPS_DEFAULTS
INVENTORY = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main:
    address: 203.0.113.1
    public_name: vps.example.com
    acme: {email: admin@example.com, directory: "https://ca.example.net/dir", ca_bundle: ca.pem}
pis:
  pi1:
    address: 10.0.0.1
    tunnels:
      api: {type: http, remote_port: 20001}
      app: {type: http, server_name: app.example.com, remote_port: 20002, hsts: true}
      cam: {type: http, server_name: cam.example.com, remote_port: 20003, basic_auth_file: pw}
"""


def write(tmp: Path, text: str) -> Path:
    (tmp / "pw").write_text("alice:$apr1$abc$def\n")
    (tmp / "pw").chmod(0o600)
    (tmp / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    path = tmp / "hosts.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return load_inventory(write(tmp_path, INVENTORY), save_allocations=False)


def problem(tmp: Path, text: str) -> str:
    with pytest.raises(InventoryError) as caught:
        load_inventory(write(tmp, text), save_allocations=False)
    [found] = caught.value.problems
    return str(found)


def found(*names: str, server: str = "https://ca.example.net/dir", kept: bool = False) -> acme.AcmeFound:
    return acme.AcmeFound({n: acme.CertState(server, True, kept, "Jan  1 00:00:00 2031 GMT") for n in names})


def text_of(ops: list[Op], path: str) -> str:
    [op] = [o for o in ops if isinstance(o, File) and o.path == path]
    from pitunnel.facts import FileState
    return op.wanted(FileState(exists=False))


def lines(text: str) -> list[str]:
    return [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]


# ---------------------------------------------------------------------------
# the inventory


def test_acme_keys_are_read(inv: Inventory) -> None:
    vps = inv.vps["main"]
    assert vps.public_name == "vps.example.com" and vps.acme is not None
    assert (vps.acme.email, vps.acme.directory) == ("admin@example.com", "https://ca.example.net/dir")
    assert vps.acme.ca_bundle is not None and vps.acme.ca_bundle.name == "ca.pem"
    assert [t.hsts for t in inv.pis["pi1"].tunnels] == [False, True, False]
    assert vps_steps.acme_names(inv, vps) == ["vps.example.com", "app.example.com", "cam.example.com"]


def test_staging_chooses_lets_encrypts_staging_directory(tmp_path: Path) -> None:
    text = INVENTORY.replace('directory: "https://ca.example.net/dir", ca_bundle: ca.pem', "staging: true")
    assert load_inventory(write(tmp_path, text), save_allocations=False).vps["main"].acme.directory == \
        LETS_ENCRYPT_STAGING  # type: ignore[union-attr]


@pytest.mark.parametrize(("old", "new", "where", "says"), [
    ('directory: "https://ca.example.net/dir"', 'staging: true, directory: "https://ca.example.net/dir"',
     "vps.main.acme.staging", "both choose the ACME directory"),
    ("email: admin@example.com, ", "", "vps.main.acme.email", "required key 'email' is missing"),
    ("email: admin@example.com", "email: admin", "vps.main.acme.email", "is not an e-mail address"),
    ('"https://ca.example.net/dir"', "http://ca.example.net/dir", "vps.main.acme.directory", "is not an https:// URL"),
    ("ca_bundle: ca.pem", "ca_bundle: nothere.pem", "vps.main.acme.ca_bundle", "does not exist"),
    ("email: admin@example.com", "email: admin@example.com, emial: x", "vps.main.acme.emial", "did you mean 'email'?"),
])
def test_bad_acme_setting_is_one_problem_naming_its_key(tmp_path: Path, old: str, new: str, where: str,
                                                        says: str) -> None:
    text = problem(tmp_path, INVENTORY.replace(old, new))
    assert f"hosts.yml:6:" in text and f" {where}: " in text and says in text


@pytest.mark.parametrize(("edit", "where", "fix"), [
    (("    acme: {email: admin@example.com, directory: \"https://ca.example.net/dir\", ca_bundle: ca.pem}\n", ""),
     "pis.pi1.tunnels.cam.basic_auth_file", "give VPS 'main' an 'acme:' setting (or tls_certificate and tls_key), "
                                            "or remove basic_auth_file"),
    (("server_name: cam.example.com", 'server_name: "*.example.com"'), "pis.pi1.tunnels.cam.basic_auth_file",
     "ACME's http-01 cannot prove a wildcard name"),
    # a path-prefix route gets a certificate only through the VPS's own name
    (("    public_name: vps.example.com\n", "", "api: {type: http, remote_port: 20001}",
      "api: {type: http, remote_port: 20001, basic_auth_file: pw}"),
     "pis.pi1.tunnels.api.basic_auth_file", "give VPS 'main' 'public_name' and 'acme:'"),
])
def test_basic_auth_needs_a_certificate(tmp_path: Path, edit: tuple[str, ...], where: str, fix: str) -> None:
    text = INVENTORY.replace(", hsts: true", "")
    for old, new in zip(edit[::2], edit[1::2]):
        text = text.replace(old, new)
    found_text = problem(tmp_path, text)
    assert f" {where}: basic auth on a route without TLS would send its passwords in clear over plain HTTP" in found_text
    assert fix in found_text and "hosts.yml:" in found_text


def test_hsts_needs_tls_and_is_http_only(tmp_path: Path) -> None:
    text = INVENTORY.replace("    public_name: vps.example.com\n", "").replace(", basic_auth_file: pw", "")
    text = text.replace("api: {type: http, remote_port: 20001}", "api: {type: http, remote_port: 20001, hsts: true}")
    assert "pis.pi1.tunnels.api.hsts: 'hsts: true' on a route without TLS" in problem(tmp_path, text)
    text = INVENTORY.replace("api: {type: http, remote_port: 20001}", "ssh: {type: ssh, remote_port: 20001, hsts: true}")
    assert "'hsts' only applies to http tunnels" in problem(tmp_path, text)


# ---------------------------------------------------------------------------
# Nginx, before and after certbot


def site(ops: list[Op], stem: str) -> str:
    return text_of(ops, f"{D['nginx_sites_dir']}/pitunnel-{stem}.conf")


def test_before_its_certificate_a_name_serves_the_challenge_and_auth_waits(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    app = lines(site(ops, "pi1_app"))
    assert "listen 80;" in app and not any("ssl" in l for l in app)
    assert "location ^~ /.well-known/acme-challenge/ {" in app and f"root {D['acme_webroot']};" in app
    assert "proxy_pass http://pitunnel_pi1_app;" in app and not any("Strict-Transport" in l for l in app)
    cam = lines(site(ops, "pi1_cam"))
    assert any(l.startswith("return 503 ") for l in cam) and 'auth_basic "pi1";' not in cam
    assert "location ^~ /.well-known/acme-challenge/ {" in cam and not any("proxy_pass" in l for l in cam)
    default = lines(text_of(ops, D["nginx_default_site"]))
    assert "server_name vps.example.com;" in default and "location ^~ /.well-known/acme-challenge/ {" in default


def test_with_its_certificate_a_name_is_https_only(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"], certs=found("app.example.com", "cam.example.com",
                                                                    "vps.example.com"))
    text = site(ops, "pi1_app")
    redirect, served = text.split("\nserver {", 2)[1:]
    assert "return 308 https://$host$request_uri;" in lines(redirect) and "proxy_pass" not in redirect
    assert "location ^~ /.well-known/acme-challenge/ {" in lines(redirect)
    served_lines = lines(served)
    assert "listen 443 ssl;" in served_lines and "listen 80;" not in served_lines
    live = f"{D['letsencrypt_dir']}/live/pitunnel-app.example.com"
    assert f"ssl_certificate {live}/fullchain.pem;" in served_lines
    assert f"ssl_certificate_key {live}/privkey.pem;" in served_lines
    assert "ssl_protocols TLSv1.2 TLSv1.3;" in served_lines and "ssl_prefer_server_ciphers off;" in served_lines
    assert not any("stapling" in l and "off" not in l for l in served_lines)
    assert 'add_header Strict-Transport-Security "max-age=63072000" always;' in served_lines
    cam = lines(site(ops, "pi1_cam"))
    assert 'auth_basic "pi1";' in cam and not any(l.startswith("return 503") for l in cam)
    assert not any("Strict-Transport" in l for l in cam)  # hsts is per tunnel, opt-in
    default = text_of(ops, D["nginx_default_site"])
    assert "return 308 https://vps.example.com$request_uri;" in lines(default)
    assert f"ssl_certificate {D['letsencrypt_dir']}/live/pitunnel-vps.example.com/fullchain.pem;" in lines(default)


REJECT = ["listen 443 ssl default_server;", "listen [::]:443 ssl default_server;", "server_name _;",
          "ssl_reject_handshake on;"]


def reject_server(default: str) -> list[str]:
    """The default site's server that refuses TLS handshakes, [] if there is none."""
    found = [part for part in default.split("\nserver {")[1:] if "ssl_reject_handshake" in part]
    assert len(found) <= 1
    return lines(found[0].rsplit("}", 1)[0]) if found else []


def test_without_public_name_https_for_an_unknown_name_is_refused_in_the_handshake(tmp_path: Path) -> None:
    """acme: and no public_name: the path-prefix server has no certificate, so without a default server of its
    own on 443 nginx would answer the VPS's address or any unknown name with the first named route's app and
    certificate. Once a route serves HTTPS, the default site refuses every other name's handshake."""
    inv = load_inventory(write(tmp_path, INVENTORY.replace("    public_name: vps.example.com\n", "")),
                         save_allocations=False)
    before = text_of(vps_steps.converge_ops(inv, inv.vps["main"]), D["nginx_default_site"])
    assert reject_server(before) == [] and "443" not in before  # nothing serves HTTPS yet
    ops = vps_steps.converge_ops(inv, inv.vps["main"], certs=found("app.example.com"))
    default = text_of(ops, D["nginx_default_site"])
    assert reject_server(default) == REJECT
    plain = lines(default.split("\nserver {")[1])  # the path-prefix server itself: plain HTTP, the default on 80
    assert "listen 80 default_server;" in plain and not any("443" in l or "ssl" in l for l in plain)
    assert "listen 443 ssl;" in lines(site(ops, "pi1_app"))  # the named route keeps its own, not the default
    # pitunnel does not claim a default server the VPS's owner has
    quiet = vps_steps.converge_ops(inv, inv.vps["main"], claim_default=False, certs=found("app.example.com"))
    assert reject_server(text_of(quiet, D["nginx_default_site"])) == []


@pytest.mark.parametrize(("users", "rejects"), [
    ("", True),
    ("/etc/nginx/conf.d/mine.conf listen 80 default_server;", True),  # the user's on 80 only: 443 is still open
    ("/etc/nginx/conf.d/mine.conf listen 443 ssl default_server;", False),  # the user's: theirs to answer
])
def test_provision_refuses_unknown_names_unless_the_user_has_a_default_server_on_443(
        tmp_path: Path, users: str, rejects: bool) -> None:
    from tests.unit.fake_hosts import FakeHost, play_on
    inv = load_inventory(write(tmp_path, INVENTORY.replace("    public_name: vps.example.com\n", "")),
                         save_allocations=False)
    have = "\n".join(f"pitunnel-{n}|https://ca.example.net/dir|yes|no|Jan  1 00:00:00 2031 GMT"
                     for n in ("app.example.com", "cam.example.com"))
    host = FakeHost("main", [("dpkg-query", "nginx certbot installed"), ("default(_server)?", users),
                             ("renewal/pitunnel-", have)])
    provision_vps(play_on(inv, {"main": host}))  # type: ignore[dict-item]
    wanted = vps_steps.converge_ops(inv, inv.vps["main"], claim_default=not users, reject_unknown=rejects,
                                    certs=found("app.example.com", "cam.example.com"))
    default = text_of(wanted, D["nginx_default_site"])
    assert (reject_server(default) == REJECT) is rejects
    import base64
    assert host.applied(base64.b64encode(default.encode()).decode())  # what provision wrote


def test_with_a_certificate_for_the_default_site_no_handshake_is_refused(inv: Inventory, tmp_path: Path) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"], certs=found("app.example.com", "vps.example.com"))
    default = text_of(ops, D["nginx_default_site"])
    assert reject_server(default) == [] and "listen 443 ssl default_server;" in lines(default)
    hand = load_inventory(write(tmp_path, INVENTORY.replace(
        "    public_name: vps.example.com\n", "    tls_certificate: /etc/ssl/c.pem\n    tls_key: /etc/ssl/c.key\n")),
        save_allocations=False)
    default = text_of(vps_steps.converge_ops(hand, hand.vps["main"]), D["nginx_default_site"])
    assert reject_server(default) == [] and "ssl_certificate /etc/ssl/c.pem;" in lines(default)


def test_ca_bundle_reaches_certbot_and_its_timer(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    dropin = text_of(ops, D["certbot_dropin"])
    assert f"Environment=REQUESTS_CA_BUNDLE={D['acme_ca_bundle']}" in dropin
    assert "BEGIN CERTIFICATE" in text_of(ops, D["acme_ca_bundle"])


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here (nginx -t checks skipped)")
@pytest.mark.parametrize("public", [True, False])
def test_nginx_t_accepts_https_config(inv: Inventory, tmp_path: Path, public: bool) -> None:  # pragma: no cover - needs nginx
    if not public:
        write(tmp_path, INVENTORY.replace("    public_name: vps.example.com\n", ""))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-subj", "/CN=x", "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")], check=True)
    ops = vps_steps.converge_ops(inv, inv.vps["main"], certs=found("app.example.com", "vps.example.com"))
    live = f"{D['letsencrypt_dir']}/live/"
    if not public:  # the default site refuses handshakes instead
        bare = load_inventory(tmp_path / "hosts.yml", save_allocations=False)
        ops = vps_steps.converge_ops(bare, bare.vps["main"], certs=found("app.example.com"))
        assert reject_server(text_of(ops, D["nginx_default_site"])) == REJECT
    parts = [text_of(ops, D["nginx_conf"]), text_of(ops, D["nginx_default_site"]).replace(
        f"include {D['nginx_locations_dir']}/*.conf;", ""), site(ops, "pi1_app"), site(ops, "pi1_cam")]
    text = "\n".join(parts)
    for name in ("pitunnel-app.example.com", "pitunnel-vps.example.com"):
        text = text.replace(f"{live}{name}/fullchain.pem", str(tmp_path / "c.pem"))
        text = text.replace(f"{live}{name}/privkey.pem", str(tmp_path / "k.pem"))
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\n{text}\n}}\n")
    result = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# certbot, as pitunnel plans it


def facts_with(vps_found: str, inv: Inventory, certs: str = "", account: str = "") -> Facts:
    fact = acme.acme_fact(inv.vps["main"])
    return Facts({fact.key: (0, vps_found), record_fact("acme-certs").key: (0, certs),
                  record_fact("acme").key: (0, account)})


def test_certificate_is_obtained_by_webroot_once(inv: Inventory) -> None:
    vps = inv.vps["main"]
    assert vps.acme is not None
    op = acme.Certificate("app.example.com", vps.acme, vps)
    plan = op.plan(facts_with("", inv))
    script = "\n".join(plan.commands)
    for part in ("certbot certonly --non-interactive --agree-tos", "--server https://ca.example.net/dir",
                 f"--webroot -w {D['acme_webroot']}", "--cert-name pitunnel-app.example.com", "-d app.example.com",
                 "--deploy-hook 'nginx -t -q && systemctl reload nginx'", f"REQUESTS_CA_BUNDLE={D['acme_ca_bundle']}",
                 "certbot could not get a certificate for app.example.com: $reason", "acme-certs"):
        assert part in script, part
    assert "--force-renewal" not in script
    there = "pitunnel-app.example.com|https://ca.example.net/dir|yes|no|Jan  1 00:00:00 2031 GMT\n"
    again = op.plan(facts_with(there, inv))
    assert again.commands == [] and "valid until Jan  1 00:00:00 2031 GMT" in again.reason
    other = op.plan(facts_with(there.replace("ca.example.net", "staging.example.net"), inv))
    assert "--force-renewal" in "\n".join(other.commands) and "staging.example.net" in other.reason
    kept = op.plan(facts_with(there.replace("|yes|no|", "|yes|yes|"), inv))
    assert "certbot" not in "\n".join(kept.commands) and "no call to the CA" in kept.reason


def test_teardown_stops_renewal_of_its_own_certificates_only(inv: Inventory) -> None:
    output = ("pitunnel-app.example.com|https://ca.example.net/dir|yes|no|x\n"
              "pitunnel-other.example.com|https://ca.example.net/dir|yes|no|x\n")
    keep = acme.CertificatesReleased(False, inv.vps["main"]).plan(
        facts_with(output, inv, certs="pitunnel-app.example.com\n", account="account\n"))
    script = "\n".join(keep.commands)
    assert "renewal/pitunnel-app.example.com.conf" in script and "other.example.com" not in script
    assert "rm -rf" not in script and "kept" in keep.reason
    purge = acme.CertificatesReleased(True, inv.vps["main"]).plan(
        facts_with(output, inv, certs="pitunnel-app.example.com\n", account="account\n"))
    script = "\n".join(purge.commands)
    assert "live/pitunnel-app.example.com" in script and "accounts" in script and "other.example.com" not in script
    assert acme.CertificatesReleased(True, inv.vps["main"]).plan(facts_with(output, inv)).commands == []


def test_acme_fact_reads_certbots_files() -> None:
    parsed = acme.parse("pitunnel-a.example.com|https://x/dir|yes|no|Jan  1 00:00:00 2031 GMT\n"
                        "pitunnel-b.example.com||no|yes|\nsomeone-else|x|yes|no|x\nGIVEN|Feb  2 00:00:00 2030 GMT\n")
    assert parsed.certs == {"a.example.com": acme.CertState("https://x/dir", True, False, "Jan  1 00:00:00 2031 GMT"),
                            "b.example.com": acme.CertState("", False, True, "")}
    assert parsed.given_not_after == "Feb  2 00:00:00 2030 GMT"


def test_teardown_removes_a_folder_only_when_nothing_else_is_in_it() -> None:
    gone = acme.FolderGone("/etc/systemd/system/certbot.service.d", frozenset({"pitunnel.conf"}))
    key = gone.fact().key
    assert gone.plan(Facts({key: (0, "pitunnel.conf\n")})).commands == ["rmdir /etc/systemd/system/certbot.service.d"]
    assert gone.plan(Facts({key: (0, "pitunnel.conf\nmine.conf\n")})).commands == []
    assert gone.plan(Facts({key: (0, "ABSENT\n")})).commands == []


def test_a_tunnel_cannot_take_the_vps_public_name(tmp_path: Path) -> None:
    text = problem(tmp_path, INVENTORY.replace("server_name: app.example.com", "server_name: VPS.example.com"))
    assert "pis.pi1.tunnels.app.server_name: server_name 'VPS.example.com' is VPS 'main''s public_name" in text


CERTBOT_SAYS = {  # certbot's output when it fails -> the one line pitunnel reports
    "detail": ("Requesting a certificate for app.example.com\n\nCertbot failed to authenticate some domains\n"
               "  Domain: app.example.com\n  Detail: 203.0.113.1: Invalid response from http://app.example.com/x: 404\n"
               "\nAsk for help or search for solutions at https://community.letsencrypt.org.\n"
               "Saving debug log to /var/log/letsencrypt/letsencrypt.log\n",
               "203.0.113.1: Invalid response from http://app.example.com/x: 404"),
    "last-line": ("Saving debug log to /var/log/letsencrypt/letsencrypt.log\nAn unexpected error occurred:\n"
                  "The server could not be reached\n\nAsk for help or search for solutions at "
                  "https://community.letsencrypt.org.\nSaving debug log to /var/log/letsencrypt/letsencrypt.log\n",
                  "The server could not be reached"),
}


@pytest.mark.parametrize("case", CERTBOT_SAYS)
def test_a_certbot_failure_is_one_line_with_the_cas_reason(tmp_path: Path, case: str) -> None:
    said, reason = CERTBOT_SAYS[case]
    (tmp_path / "said").write_text(said)
    certbot = tmp_path / "certbot"
    certbot.write_text(f"#!/bin/sh\ncat {tmp_path}/said\nexit 1\n")
    certbot.chmod(0o755)
    script = f"if ! out=$(certbot certonly 2>&1); then {acme.one_line_failure('app.example.com')}; fi"
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert (done.returncode, done.stdout) == (1, f"certbot could not get a certificate for app.example.com: {reason}\n")


def test_each_certbot_plan_exactly(inv: Inventory) -> None:
    import dataclasses

    vps = inv.vps["main"]
    assert vps.acme is not None
    op = acme.Certificate("app.example.com", vps.acme, vps)
    assert op.title == "certificate app.example.com (ACME)" and [f.key for f in op.facts()] == [acme.acme_fact(vps).key]
    state = "/var/lib/pitunnel-state"
    kept_conf, renewal = f"{state}/acme-kept/pitunnel-app.example.com.conf", "/etc/letsencrypt/renewal/pitunnel-app.example.com.conf"
    there = "pitunnel-app.example.com|https://ca.example.net/dir|yes|no|Jan  1 00:00:00 2031 GMT\n"
    kept = op.plan(facts_with(there.replace("|yes|no|", "|yes|yes|"), inv))
    assert kept.commands == [f"mv -f {kept_conf} {renewal}", f"rmdir {state}/acme-kept 2>/dev/null || true"]
    assert kept.reason == "kept by an earlier teardown: renewal back on (no call to the CA)"
    assert op.plan(facts_with(there.replace("Jan  1 00:00:00 2031 GMT", ""), inv)).reason == \
        "valid until ?; certbot's timer renews it"
    new = op.plan(facts_with("", inv))
    assert new.reason == "obtain from https://ca.example.net/dir"
    assert new.commands[0] == (f"if [ ! -d /etc/letsencrypt/accounts ]; then mkdir -p {state} && chmod 700 {state}; "
                               f"for n in account; do grep -qxF \"$n\" {state}/acme 2>/dev/null || echo \"$n\" >> "
                               f"{state}/acme; done; fi")
    assert new.commands[2:] == [f"mkdir -p {state} && chmod 700 {state}",
                                f"for n in pitunnel-app.example.com; do grep -qxF \"$n\" {state}/acme-certs 2>/dev/null "
                                f"|| echo \"$n\" >> {state}/acme-certs; done"]
    certbot = ("REQUESTS_CA_BUNDLE=/etc/pitunnel/acme-ca.pem certbot certonly --non-interactive --agree-tos "
               "--no-eff-email -m admin@example.com --server https://ca.example.net/dir --webroot -w "
               f"{D['acme_webroot']} --cert-name pitunnel-app.example.com -d app.example.com --deploy-hook "
               "'nginx -t -q && systemctl reload nginx'")
    assert new.commands[1].startswith(f"if ! out=$({certbot} 2>&1); then ")
    elsewhere = there.replace("https://ca.example.net/dir", "").replace("|yes|no|", "|yes|yes|")
    moved = op.plan(facts_with(elsewhere, inv))  # set aside, from a directory nobody recorded
    assert moved.reason == "replace the one from an unknown directory: obtain from https://ca.example.net/dir"
    assert moved.commands[1].startswith(f"if ! out=$(mv -f {kept_conf} {renewal}; {certbot} --force-renewal 2>&1); ")
    bare = acme.Certificate("app.example.com", dataclasses.replace(vps.acme, ca_bundle=None), vps)
    assert "REQUESTS_CA_BUNDLE" not in "\n".join(bare.plan(facts_with("", inv)).commands)


@pytest.mark.parametrize("check", [False, True])
def test_each_name_gets_its_certificate_alone_and_one_the_ca_refuses_fails_alone(
        inv: Inventory, capsys: pytest.CaptureFixture[str], check: bool) -> None:
    from tests.unit.fake_hosts import FakeHost, lines, play_on
    host = FakeHost("main", fail_on="-d app.example.com ")
    play = play_on(inv, {"main": host}, check=check)
    changed, failed = vps_steps.certificates(host, inv, inv.vps["main"], acme.AcmeFound({}), play)  # type: ignore[arg-type]
    out = lines(capsys)
    if check:
        assert (changed, failed, host.ops) == (True, [], [])
        assert "would change main certificate cam.example.com (ACME) - obtain from https://ca.example.net/dir" in out
        return
    assert (changed, failed) == (True, ["app.example.com"])
    asked = [name for name in ("vps.example.com", "app.example.com", "cam.example.com")
             if any(f"-d {name} " in body for body in host.ops)]
    assert asked == ["vps.example.com", "app.example.com", "cam.example.com"]  # each its own, the others go on
    assert "changed main certificate cam.example.com (ACME) - obtain from https://ca.example.net/dir" in out
    assert any(l.startswith("failed main certificate app.example.com (ACME)") for l in out), out


def test_no_certificate_changed_says_so(inv: Inventory) -> None:
    from tests.unit.fake_hosts import FakeHost, play_on
    there = "".join(f"pitunnel-{n}|https://ca.example.net/dir|yes|no|Jan  1 00:00:00 2031 GMT\n"
                    for n in ("vps.example.com", "app.example.com", "cam.example.com"))
    host = FakeHost("main", [("letsencrypt", there)])
    assert vps_steps.certificates(host, inv, inv.vps["main"], acme.AcmeFound({}), play_on(inv, {"main": host})) == \
        (False, [])  # type: ignore[arg-type]
    assert host.ops == []
    last_only = FakeHost("main", [("letsencrypt", there.splitlines()[2] + "\n")])  # only the last name has one
    assert vps_steps.certificates(last_only, inv, inv.vps["main"], acme.AcmeFound({}),  # type: ignore[arg-type]
                                  play_on(inv, {"main": last_only})) == (True, [])
