"""Inventory choices other than the seed's: tunnel run as `pi`, passwords turned off once keys work,
a host-name site with basic auth and TLS, and an SSH tunnel that stays private (reached with a jump)."""

from __future__ import annotations

import base64
import json
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import paramiko
import pytest
import yaml

from lab import password_file
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.site import provision_pi as provision_pis
from pitunnel.roles.site import provision_vps
from tests.conftest import lab_up
from tests.lab.runs import in_host, play
from tests.lab.test_lab import password_login

pytestmark = pytest.mark.lab


def both(p):  # type: ignore[no-untyped-def]
    provision_vps(p)
    provision_pis(p)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = lab_up(2).inventory
    tmp = tmp_path_factory.mktemp("variants")
    cert = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj", "/CN=api.pi1.test",
         "-addext", "subjectAltName=DNS:api.pi1.test,IP:198.18.0.10",
         "-keyout", str(tmp / "key.pem"), "-out", str(tmp / "cert.pem")], capture_output=True, text=True)
    assert cert.returncode == 0, cert.stderr
    for name in ("key.pem", "cert.pem"):
        blob = base64.b64encode((tmp / name).read_bytes()).decode()
        in_host("vps", f"mkdir -p /etc/ssl/lab && echo {blob} | base64 -d > /etc/ssl/lab/{name}")
    htpasswd = subprocess.run(["openssl", "passwd", "-apr1", "s3cret"], capture_output=True, text=True).stdout.strip()
    (tmp / "htpasswd").write_text(f"alice:{htpasswd}\n")
    doc = yaml.safe_load(base.read_text())
    doc["vps"]["vps"].update(tls_certificate="/etc/ssl/lab/cert.pem", tls_key="/etc/ssl/lab/key.pem")
    doc["settings"]["verify_ca_file"] = str(tmp / "cert.pem")  # verify checks HTTPS against it: no checks off
    pi1 = doc["pis"]["pi1"]
    pi1.update(tunnel_user="pi", disable_password_login=True)
    pi1["tunnels"]["api"] = {"type": "http", "local_port": 80, "server_name": "api.pi1.test",
                             "basic_auth_file": str(tmp / "htpasswd")}
    doc["pis"]["pi2"]["tunnels"]["ssh"]["public"] = False
    path = tmp / "hosts.yml"
    path.write_text(yaml.safe_dump(doc))
    code, p = play(path, both)
    assert code == 0, {h: (r.changed, r.failed) for h, r in p.reporter.recaps.items()}
    return path


def test_verify_passes_for_every_variant(inventory: Path) -> None:
    reports: list = []
    code, _ = play(inventory, lambda p: reports.extend(verify(p)), quiet=True)
    failed = [(r.pi, c.name, c.detail) for r in reports for c in r.checks if not c.passed]
    assert code == 0 and failed == []
    pi2 = {c.name: c.detail for c in reports[1].checks}
    assert "jump via vps" in pi2["ssh: ssh lands on pi2"]


def test_rerun_changes_nothing(inventory: Path) -> None:
    code, p = play(inventory, both)
    assert code == 0 and all(r.changed == 0 for r in p.reporter.recaps.values())


def test_tunnel_runs_as_pi_when_asked(inventory: Path) -> None:
    assert in_host("pi1", "ps -o user= -C autossh").split() == ["pi"]
    assert in_host("pi1", "getent passwd pitunnel || echo none").strip() == "none"
    assert "PRIVATE KEY" in in_host("pi1", "cat /home/pi/.ssh/pitunnel_ed25519")


def test_password_login_off_only_after_keys_work(inventory: Path) -> None:
    password = password_file("pi1").read_text().strip()
    with pytest.raises(paramiko.AuthenticationException):
        password_login("198.19.1.2", "pi", password)
    assert password_login("198.19.2.2", "pi", password.replace(password, password_file("pi2").read_text().strip())).split()[0] == "pi"


def test_private_ssh_tunnel_is_not_public(inventory: Path) -> None:
    listeners = in_host("vps", "ss -Htln")
    assert "127.0.0.1:12347" in listeners and "0.0.0.0:12347" not in listeners


def test_host_name_site_with_basic_auth_and_tls(inventory: Path) -> None:
    context = ssl.create_default_context(cafile=str(inventory.parent / "cert.pem"))
    context.check_hostname = False
    url = "https://198.18.0.10/"
    request = urllib.request.Request(url, headers={"Host": "api.pi1.test"})
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(request, timeout=10, context=context)
    assert denied.value.code == 401
    token = base64.b64encode(b"alice:s3cret").decode()
    request = urllib.request.Request(url, headers={"Host": "api.pi1.test", "Authorization": f"Basic {token}"})
    with urllib.request.urlopen(request, timeout=10, context=context) as resp:
        body = json.load(resp)
    assert body["pi"] == "pi1" and body["x_forwarded_proto"] == "https"
