"""HTTPS from a real ACME CA (issue 14): the lab's pebble issues, over http-01 fetched from the VPS's port 80
across the lab network, a certificate for a server-name route and one for the VPS's public_name (its
path-prefix routes); the VPS's certbot renews them, Nginx serves them, verify checks them. One lab boot."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from pathlib import Path

import pytest
import yaml

import lab
from pitunnel.roles.probes.status import status
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.site import provision, provision_vps, teardown
from invoke import Exit

from pitunnel.taskkit import Flags, run_play
from tests.conftest import lab_up
from tests.lab.runs import in_host, play

pytestmark = pytest.mark.lab

VPS = str(lab.VPS_ADDR)
PUBLIC = "vps.pitunnel.test"  # the VPS's own name: the path-prefix route /pi1/ is served under it
APP = "app.pitunnel.test"  # a server-name route with hsts
PRIVATE = "private.pitunnel.test"  # a server-name route behind basic auth
BROKEN = "broken.pitunnel.test"  # the lab's DNS answers SERVFAIL for it: no certificate can be had
STARTED = time.monotonic()


def write(doc: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, lab.LabCA, dict]:
    base = lab_up(1).inventory
    ca = lab.start_ca()
    tmp = tmp_path_factory.mktemp("https")
    htpasswd = subprocess.run(["openssl", "passwd", "-apr1", "s3cret"], capture_output=True, text=True).stdout.strip()
    (tmp / "htpasswd").write_text(f"alice:{htpasswd}\n")
    (tmp / "htpasswd").chmod(0o600)
    doc = yaml.safe_load(base.read_text())
    doc["settings"]["verify_ca_file"] = str(ca.root)
    doc["vps"]["vps"].update(public_name=PUBLIC, acme={"email": "admin@pitunnel.test", "directory": ca.directory,
                                                       "ca_bundle": str(ca.ca_bundle)})
    doc["pis"]["pi1"]["tunnels"].update(
        web={"type": "http", "local_port": 80, "server_name": APP, "hsts": True},
        private={"type": "http", "local_port": 80, "server_name": PRIVATE, "basic_auth_file": str(tmp / "htpasswd")})
    path = write(doc, tmp / "hosts.yml")
    started = time.monotonic()
    code, p = play(path, provision)
    assert code == 0, {h: (r.changed, r.failed) for h, r in p.reporter.recaps.items()}
    print(f"first provision with three certificates from pebble: {time.monotonic() - started:.1f}s")
    return path, ca, doc


def curl(ca: lab.LabCA, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    host = url.split("/")[2].split(":")[0]
    return subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", str(ca.root), "--resolve", f"{host}:443:{VPS}",
                           "--resolve", f"{host}:80:{VPS}", *args, url], capture_output=True, text=True)


def serial(name: str, ca: lab.LabCA) -> int:
    context = ssl.create_default_context(cafile=str(ca.root))
    import socket

    with socket.create_connection((VPS, 443), timeout=10) as raw, context.wrap_socket(raw, server_hostname=name) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der, capture_output=True)
    return int(out.stdout.decode().strip().split("=")[1], 16)


def test_verify_passes_over_https_for_both_kinds_of_route(setup: tuple[Path, lab.LabCA, dict]) -> None:
    path, _, _ = setup
    reports: list = []
    code, _ = play(path, lambda p: reports.extend(verify(p)), quiet=True)
    failed = [(r.pi, c.name, c.detail) for r in reports for c in r.checks if not c.passed]
    assert code == 0 and failed == []
    details = {c.name: c.detail for c in reports[0].checks}
    assert details["api: http via nginx reaches pi1"].startswith(f"https://{PUBLIC}:443/pi1/")
    assert details["web: http via nginx reaches pi1"].startswith(f"https://{APP}:443/")
    assert "plain HTTP: 308 to https://" in details["web: http via nginx reaches pi1"]
    rows: list = []
    code, _ = play(path, lambda p: rows.extend(status(p)), quiet=True)
    expiry = {r.tunnel: r.certificate for r in rows}
    assert expiry["ssh"] == "-" and all(expiry[t].endswith("GMT") for t in ("api", "web", "private")), expiry


def test_curl_with_pebbles_root_reaches_the_pi_and_plain_http_is_redirected(setup: tuple[Path, lab.LabCA, dict]) -> None:
    _, ca, _ = setup
    for url in (f"https://{APP}/", f"https://{PUBLIC}/pi1/"):
        done = curl(ca, url, "-D", "-")
        assert done.returncode == 0, done.stderr
        head, _, body = done.stdout.partition("\n\n")  # (text mode: curl's CRLF read as LF)
        assert body, done.stdout
        answer = json.loads(body)
        assert answer["pi"] == "pi1" and answer["x_forwarded_proto"] == "https"
        assert ("strict-transport-security: max-age=63072000" in head.lower()) == (url.startswith(f"https://{APP}"))
    # the same name without the lab's roots: refused (the chain is checked, not waved through)
    plain = subprocess.run(["curl", "-sS", "--max-time", "10", "--resolve", f"{APP}:443:{VPS}", f"https://{APP}/"],
                           capture_output=True, text=True)
    assert plain.returncode == 60, plain.stderr
    for url, where in ((f"http://{APP}/x?y=1", f"https://{APP}/x?y=1"), (f"http://{PUBLIC}/pi1/", f"https://{PUBLIC}/pi1/"),
                       (f"http://{VPS}/pi1/", f"https://{PUBLIC}/pi1/")):
        done = curl(ca, url, "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}")
        assert done.stdout == f"308 {where}", (url, done.stdout, done.stderr)


def test_basic_auth_only_over_tls(setup: tuple[Path, lab.LabCA, dict], tmp_path: Path) -> None:
    _, ca, doc = setup
    assert curl(ca, f"https://{PRIVATE}/", "-o", "/dev/null", "-w", "%{http_code}").stdout == "401"
    done = curl(ca, f"https://{PRIVATE}/", "-u", "alice:s3cret")
    assert json.loads(done.stdout)["pi"] == "pi1"
    # the same route on a VPS without acme: refused before any host is touched, naming file, line, key, fix
    bare = json.loads(json.dumps(doc))
    del bare["vps"]["vps"]["acme"]
    del bare["pis"]["pi1"]["tunnels"]["web"]["hsts"]
    path = write(bare, tmp_path / "bare.yml")
    before = in_host("vps", "cat /etc/nginx/sites-enabled/pitunnel-pi1_private.conf | md5sum")
    with pytest.raises(Exit) as refused:
        run_play(provision, Flags(inventory=str(path)))
    text = str(refused.value.message)
    assert refused.value.code == 3 and text.count("\n") == 1, text  # one problem: the file, then one line
    assert "pis.pi1.tunnels.private.basic_auth_file: basic auth on a route without TLS would send its passwords in " \
           "clear" in text and f"{path}:" in text and "Fix: give VPS 'vps' an 'acme:' setting" in text
    assert in_host("vps", "cat /etc/nginx/sites-enabled/pitunnel-pi1_private.conf | md5sum") == before


def test_challenge_path_answers_while_the_pi_is_down(setup: tuple[Path, lab.LabCA, dict]) -> None:
    _, ca, _ = setup
    in_host("vps", "mkdir -p /var/lib/pitunnel-acme/.well-known/acme-challenge && "
                   "echo token-body > /var/lib/pitunnel-acme/.well-known/acme-challenge/probe")
    in_host("pi1", "systemctl stop pitunnel@vps.service")
    try:
        for host in (APP, PUBLIC, PRIVATE):
            done = curl(ca, f"http://{host}/.well-known/acme-challenge/probe", "-w", " %{http_code}")
            assert done.stdout == "token-body\n 200", (host, done.stdout)
        assert curl(ca, f"https://{APP}/", "-o", "/dev/null", "-w", "%{http_code}").stdout == "502"  # the Pi is down
    finally:
        in_host("pi1", "systemctl start pitunnel@vps.service")
        in_host("vps", "rm -f /var/lib/pitunnel-acme/.well-known/acme-challenge/probe")


def test_rerun_changes_nothing_and_does_not_call_the_ca(setup: tuple[Path, lab.LabCA, dict]) -> None:
    path, ca, _ = setup
    requests = ca.log.read_text().count("\n")
    code, p = play(path, provision)
    assert code == 0 and {h: r.changed for h, r in p.reporter.recaps.items()} == {"vps": 0, "pi1": 0}
    assert ca.log.read_text().count("\n") == requests  # pebble saw no request: certbot never ran
    assert sorted(in_host("vps", "ls /etc/letsencrypt/renewal/").split()) == [
        f"pitunnel-{APP}.conf", f"pitunnel-{PRIVATE}.conf", f"pitunnel-{PUBLIC}.conf"]


def test_forced_renewal_is_served_without_a_provision_run(setup: tuple[Path, lab.LabCA, dict]) -> None:
    _, ca, _ = setup
    before = serial(APP, ca)
    # with the environment certbot's timer runs it in (pitunnel's drop-in: the lab CA for pebble's TLS)
    env = in_host("vps", "systemctl show -p Environment --value certbot.service").strip()
    assert env == "REQUESTS_CA_BUNDLE=/etc/pitunnel/acme-ca.pem"
    assert in_host("vps", "systemctl is-enabled certbot.timer").strip() == "enabled"
    out = lab.exec_in("vps", f"env {env} certbot renew --no-random-sleep-on-renew --force-renewal --cert-name pitunnel-{APP} 2>&1", timeout=120)
    assert out.returncode == 0, out.stdout
    # the deploy hook checked Nginx's config and reloaded it (new workers take over within moments)
    deadline = time.monotonic() + 10
    while serial(APP, ca) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert serial(APP, ca) != before, out.stdout
    assert in_host("vps", "nginx -t 2>&1 && echo fine").strip().endswith("fine")


def test_unobtainable_certificate_fails_alone_and_a_rerun_retries(setup: tuple[Path, lab.LabCA, dict], tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path, ca, doc = setup
    lab.dns_fail(BROKEN)
    broken = json.loads(json.dumps(doc))
    broken["pis"]["pi1"]["tunnels"]["broken"] = {"type": "http", "local_port": 80, "server_name": BROKEN}
    broken_path = write(broken, tmp_path / "broken.yml")
    try:
        requests = ca.log.read_text().count("\n")
        code, p = play(broken_path, provision, check=True)  # --check: says it would ask, asks nobody
        out = capsys.readouterr().out
        assert code == 0 and f"would change {'vps':<10} certificate {BROKEN} (ACME) - obtain from" in out, out
        assert ca.log.read_text().count("\n") == requests
        for attempt in (1, 2):
            requests = ca.log.read_text().count("\n")
            code, p = play(broken_path, provision)
            out = capsys.readouterr().out
            assert code != 0
            failed = [l for l in out.splitlines() if l.split()[:1] == ["failed"]]
            assert len(failed) == 1 and f"certificate {BROKEN} (ACME)" in failed[0], out
            reason = f"certbot could not get a certificate for {BROKEN}: Get \"http://{BROKEN}:80/"
            assert reason in failed[0] and "could not resolve" in failed[0], failed[0]
            assert ca.log.read_text().count("\n") > requests, attempt  # it asked the CA again
            assert p.reporter.recaps["pi1"].failed == 0 and p.reporter.recaps["vps"].failed == 1
            # every other route still answers over HTTPS; the new one over plain HTTP until it has a certificate
            assert json.loads(curl(ca, f"https://{APP}/").stdout)["pi"] == "pi1"
            assert json.loads(curl(ca, f"http://{BROKEN}/").stdout)["pi"] == "pi1"
    finally:
        code, _ = play(path, provision)
        assert code == 0


def test_without_public_name_no_pis_app_answers_an_unknown_name(setup: tuple[Path, lab.LabCA, dict],
                                                                tmp_path: Path) -> None:
    """acme: and no public_name: HTTPS for the VPS's address, an unknown SNI name or none gets no Pi's app or
    certificate (the handshake is refused); plain HTTP for them gets the path-prefix server's 404; the named
    routes still pass verify and their http-01 challenge path still answers."""
    path, ca, doc = setup
    bare = json.loads(json.dumps(doc))
    del bare["vps"]["vps"]["public_name"]
    bare_path = write(bare, tmp_path / "bare.yml")
    unknown = "unknown.pitunnel.test"
    try:
        code, _ = play(bare_path, provision_vps)
        assert code == 0
        for args in ([f"https://{VPS}/"], ["--resolve", f"{unknown}:443:{VPS}", f"https://{unknown}/"]):
            done = subprocess.run(["curl", "-sS", "-k", "--max-time", "10", *args], capture_output=True, text=True)
            assert done.returncode == 35 and '"pi"' not in done.stdout, (args, done.returncode, done.stdout)
            assert "unrecognized name" in done.stderr, done.stderr  # nginx's ssl_reject_handshake
        with pytest.raises(ssl.SSLError):  # no SNI at all
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            import socket
            with socket.create_connection((VPS, 443), timeout=10) as raw, context.wrap_socket(raw) as s:
                s.getpeercert(binary_form=True)
        for url in (f"http://{VPS}/", f"http://{unknown}/"):
            done = curl(ca, url, "-w", " %{http_code}")
            assert done.stdout == "no tunnel here\n 404", (url, done.stdout)
        assert json.loads(curl(ca, f"https://{APP}/").stdout)["pi"] == "pi1"  # the named route, its own certificate
        assert json.loads(curl(ca, f"http://{VPS}/pi1/").stdout)["pi"] == "pi1"  # the path route: plain HTTP here
        in_host("vps", "mkdir -p /var/lib/pitunnel-acme/.well-known/acme-challenge && "
                       "echo token-body > /var/lib/pitunnel-acme/.well-known/acme-challenge/probe")
        for host in (APP, PRIVATE, unknown):
            done = curl(ca, f"http://{host}/.well-known/acme-challenge/probe", "-w", " %{http_code}")
            assert done.stdout == "token-body\n 200", (host, done.stdout)
        reports: list = []
        code, _ = play(bare_path, lambda p: reports.extend(verify(p)), quiet=True)
        assert code == 0 and [(c.name, c.detail) for r in reports for c in r.checks if not c.passed] == []
    finally:
        in_host("vps", "rm -f /var/lib/pitunnel-acme/.well-known/acme-challenge/probe")
        code, _ = play(path, provision_vps)
        assert code == 0
    assert serial(PUBLIC, ca) > 0  # public_name back: its certificate is the default one again


def test_verbose_diff_run_shows_no_byte_of_the_htpasswd(setup: tuple[Path, lab.LabCA, dict],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`provision-vps -v --diff` with the route's htpasswd changed (a new salt, the same password): the file on
    the VPS and the new one are read and written, and neither's bytes reach stdout or stderr in any encoding."""
    import base64

    path, ca, doc = setup
    file = Path(doc["pis"]["pi1"]["tunnels"]["private"]["basic_auth_file"])
    old = in_host("vps", "cat /etc/nginx/pitunnel/auth/pi1_private.htpasswd")
    assert old == file.read_text() and old.startswith("alice:$apr1$")
    new = subprocess.run(["openssl", "passwd", "-apr1", "s3cret"], capture_output=True, text=True).stdout.strip()
    file.write_text(f"alice:{new}\n")
    capsys.readouterr()
    code, _ = play(path, provision_vps, verbose=True, diff=True)
    out, err = capsys.readouterr()
    assert code == 0 and "| @@FACT" in out  # -v streamed the VPS's output
    assert in_host("vps", "cat /etc/nginx/pitunnel/auth/pi1_private.htpasswd") == file.read_text()
    for text in (old, file.read_text()):
        raw = text.encode()
        for form in (text.strip(), text.split("$")[-1].strip(), base64.b64encode(raw).decode(),
                     base64.b64encode(raw.strip()).decode(), raw.hex(), raw.hex().upper()):
            assert form not in out + err, form
    assert f"(secret: {len(old)} bytes -> {len(file.read_text())} bytes, content not shown)" in out
    assert curl(ca, f"https://{PRIVATE}/", "-u", "alice:s3cret", "-o", "/dev/null", "-w", "%{http_code}").stdout == "200"


def test_teardown_keeps_certificates_unless_purged(setup: tuple[Path, lab.LabCA, dict]) -> None:
    path, ca, _ = setup
    code, _ = play(path, lambda p: teardown(p, purge=False))
    assert code == 0
    assert in_host("vps", "ls /etc/nginx/sites-enabled/").split() == ["default"]
    assert in_host("vps", "ls /etc/letsencrypt/renewal/ /etc/nginx/conf.d/").split() == [
        "/etc/letsencrypt/renewal/:", "/etc/nginx/conf.d/:"]
    assert sorted(in_host("vps", "ls /etc/letsencrypt/live/").split()) == [
        "README", f"pitunnel-{APP}", f"pitunnel-{PRIVATE}", f"pitunnel-{PUBLIC}"]
    assert in_host("vps", "ls /etc/letsencrypt/accounts/ && dpkg-query -W -f '${Status}' certbot") \
        .strip().endswith("install ok installed")
    # provisioned again, the kept certificates serve again without a call to the CA
    requests = ca.log.read_text().count("\n")
    code, _ = play(path, provision_vps)
    assert code == 0 and ca.log.read_text().count("\n") == requests
    assert len(in_host("vps", "ls /etc/letsencrypt/renewal/").split()) == 3 and serial(APP, ca) > 0
    code, _ = play(path, lambda p: teardown(p, purge=True))
    assert code == 0
    left = in_host("vps", "ls /etc/letsencrypt/live /etc/letsencrypt/archive /etc/letsencrypt/accounts "
                          "/var/lib/pitunnel-state 2>&1")
    assert "pitunnel-" not in left.replace("pitunnel-state", "") and left.count("No such file") >= 2, left
    assert "install ok installed" not in in_host("vps", "dpkg-query -W -f '${Status}\\n' certbot 2>&1")
    assert in_host("vps", "ls -d /etc/pitunnel /etc/systemd/system/certbot.service.d /var/lib/pitunnel-acme "
                          "2>&1").count("No such file") == 3
    print(f"test_https: {time.monotonic() - STARTED:.0f}s in all")
