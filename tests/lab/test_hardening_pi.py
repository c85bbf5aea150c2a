"""Hardening on the Pi's side, on real hosts: verify proves an HTTP route reaches that Pi (an Nginx page
never passes); the watchdog signals only the tunnel's own ssh, however other processes name themselves;
a Pi's broken public key fails that Pi alone and never reaches the VPS; password login through a public
ssh tunnel is warned about, and judged by the Pi's effective `sshd -T`."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from pitunnel.inventory import ports_file
from pitunnel.roles.probes.report import Verdict, PathReport
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.site import provision_pi as provision_pis
from pitunnel.roles.site import provision_vps
from pitunnel.roles.vps.nginx import route_stem
from tests.conftest import lab_up
from tests.lab.runs import RELOAD_SSHD, in_host, play, wait_for

pytestmark = pytest.mark.lab
VPS = "198.18.0.10"
PUB = "/var/lib/pitunnel/.ssh/pitunnel_ed25519.pub"
AUTHORIZED = "/var/lib/pitunnel/.ssh/authorized_keys"


def both(p):  # type: ignore[no-untyped-def]
    provision_vps(p)
    provision_pis(p)


@pytest.fixture(scope="module")
def inventory() -> Path:
    inventory = lab_up(2).inventory
    code, _ = play(inventory, both, quiet=True)
    assert code == 0
    return inventory


def run_verify(inventory: Path, **options: object) -> tuple[int, dict[str, PathReport]]:
    reports: list[PathReport] = []
    code, _ = play(inventory, lambda p: reports.extend(verify(p)), quiet=True, **options)
    return code, {r.pi: r for r in reports}


def check(report: PathReport, start: str) -> Verdict:
    return next(c for c in report.checks if c.name.startswith(start))


# ----------------------------------------------------------------- row 10: passwords through a public port
def test_provision_warns_about_passwords_on_a_public_ssh_port(inventory: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = play(inventory, both)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    for pi, port in (("pi1", 12346), ("pi2", 12347)):
        line = next(l for l in out.splitlines() if l.startswith("WARNING ") and f" {pi} " in l)
        assert f"{VPS}:{port}" in line and "accepts passwords" in line, line
        assert f"disable_password_login: true` for {pi} once key login works" in line, line


def test_verify_warns_about_passwords_and_passes_the_routes(inventory: Path) -> None:
    code, reports = run_verify(inventory)
    failed = [(r.pi, c.name, c.detail) for r in reports.values() for c in r.checks if not c.passed]
    assert code == 0 and failed == [] and all(r.passed for r in reports.values())
    for pi, port in (("pi1", 12346), ("pi2", 12347)):
        c = check(reports[pi], "sshd: password login")
        assert c.warning and f"{VPS}:{port}" in c.detail and "passwordauthentication yes" in c.detail, c
        assert "disable_password_login: true" in c.hint
        http = check(reports[pi], "api: http")
        assert f"answered as {pi}" in http.detail or "the same answer" in http.detail, http


# ----------------------------------------------------------------- row 3: a route Nginx answers itself
def test_verify_fails_a_route_that_nginx_answers_itself(inventory: Path) -> None:
    moved = in_host("vps", f"mv /etc/nginx/pitunnel/locations/{route_stem('pi1', 'api')}.conf /root/ && nginx -t "
                           "&& systemctl reload nginx && echo moved")
    assert "moved" in moved, moved  # the route is really gone, or this test proves nothing
    try:
        code, reports = run_verify(inventory)
    finally:
        in_host("vps", f"mv /root/{route_stem('pi1', 'api')}.conf /etc/nginx/pitunnel/locations/ && systemctl reload nginx")
    http = check(reports["pi1"], "api: http")
    print(http)
    assert code == 0 and not http.passed and not reports["pi1"].passed
    assert "through the VPS 404" in http.detail and "no tunnel here" in http.detail, http.detail
    assert "on the Pi itself 200" in http.detail, http.detail
    assert "Nginx does not route this request there" in http.hint, http.hint
    assert check(reports["pi2"], "api: http").passed  # the other Pi's route is not blamed


def test_verify_fails_a_route_that_reaches_another_pi(inventory: Path) -> None:
    conf = in_host("vps", "cat /etc/nginx/conf.d/pitunnel.conf")
    ports = {name: conf.split(f"upstream pitunnel_{name}_api {{")[1].split("server 127.0.0.1:")[1].split(";")[0]
             for name in ("pi1", "pi2")}
    in_host("vps", f"cp /etc/nginx/conf.d/pitunnel.conf /root/pitunnel.conf.orig && sed -i "
            f"'/upstream pitunnel_pi1_api/,/}}/ s/127.0.0.1:{ports['pi1']}/127.0.0.1:{ports['pi2']}/' "
            "/etc/nginx/conf.d/pitunnel.conf && nginx -t && systemctl reload nginx")
    try:
        code, reports = run_verify(inventory, limit="pi1")
    finally:
        in_host("vps", "mv /root/pitunnel.conf.orig /etc/nginx/conf.d/pitunnel.conf && systemctl reload nginx")
    http = check(reports["pi1"], "api: http")
    print(http)
    assert not http.passed and "answered by pi2, not pi1" in http.detail, http.detail
    code, reports = run_verify(inventory, limit="pi1")
    assert code == 0 and check(reports["pi1"], "api: http").passed


# ----------------------------------------------------------------- row 6: the watchdog and a look-alike process
FAKE = r"""import os, socket, sys, time
# from low local ports: `ss` lists them before the tunnel's own connection (from an ephemeral port)
conns = [socket.create_connection(("198.18.0.10", 12345), source_address=("", 10001 + i)) for i in range(6)]
for c in conns:
    c.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")  # then not one more byte: it looks hung
with open("/proc/self/comm", "w") as comm:
    comm.write("pid=" + sys.argv[1])
with open("/tmp/fake-ssh.pid", "w") as f:
    f.write(str(os.getpid()))
time.sleep(110)
"""


def tunnel_ssh(pi: str) -> list[str]:
    return in_host(pi, "pgrep -x -P $(systemctl show -p MainPID --value pitunnel@vps.service) ssh").split()


def test_watchdog_ignores_a_process_named_after_the_tunnel_ssh(inventory: Path) -> None:
    (real,) = tunnel_ssh("pi1")
    in_host("pi1", f"cat > /tmp/fake-ssh.py <<'EOF'\n{FAKE}EOF\nrm -f /tmp/fake-ssh.pid; "
            f"setsid -f runuser -u nobody -- python3 /tmp/fake-ssh.py {real} </dev/null >/dev/null 2>&1")
    assert wait_for(lambda: in_host("pi1", "cat /tmp/fake-ssh.pid 2>/dev/null").strip() != "", 10)
    fake = in_host("pi1", "cat /tmp/fake-ssh.pid").strip()
    try:
        assert in_host("pi1", f"cat /proc/{fake}/comm").strip() == f"pid={real}"
        # periodic checks (every 15 s) while the look-alike's connections have sent nothing for longer than
        # the hang limit (45 s)
        time.sleep(65)
        stale = in_host("pi1", "ss -Htin state established '( dport = :12345 )' | grep -o 'lastsnd:[0-9]*'")
        assert sum(1 for s in stale.split() if int(s.split(":")[1]) > 60000) >= 6, stale  # they look hung
        assert tunnel_ssh("pi1") == [real], "the watchdog ended the tunnel's ssh for another process's connection"
        # the network comes back (an address appears) while the look-alike's connections have heard nothing
        in_host("pi1", "ip addr add 192.0.2.55/32 dev lo; sleep 1; ip addr del 192.0.2.55/32 dev lo")
        time.sleep(3)
        assert tunnel_ssh("pi1") == [real], "the watchdog restarted the tunnel for another process's connection"
        log = in_host("pi1", "journalctl -t pitunnel-watchdog --no-pager -o cat")
        assert f"pid {real}" not in log, log
    finally:
        in_host("pi1", f"kill {fake}")
    # a tunnel ssh that is really stopped is still ended, within the check period (15 s)
    in_host("pi1", f"kill -STOP {real}")
    stopped = time.monotonic()
    assert wait_for(lambda: real not in tunnel_ssh("pi1"), 20), "the stopped tunnel ssh was not ended"
    print(f"stopped tunnel ssh ended after {time.monotonic() - stopped:.1f}s")
    assert wait_for(lambda: len(tunnel_ssh("pi1")) == 1 and "0.0.0.0:12346" in in_host("vps", "ss -Htln"), 30)
    assert f"ended stopped tunnel ssh (pid {real})" in in_host("pi1", "journalctl -t pitunnel-watchdog --no-pager -o cat")


# ----------------------------------------------------------------- row 7: a Pi's public key that is no key
@pytest.mark.parametrize(("content", "why"), [("hello world, not a key\n", "unknown key type 'hello'"), ("", "empty")])
def test_a_broken_public_key_fails_that_pi_alone(inventory: Path, capsys: pytest.CaptureFixture[str],
                                                 content: str, why: str) -> None:
    good = in_host("pi2", f"cat {PUB}")
    in_host("pi2", f"printf '%s' '{content}' > {PUB}")
    try:
        code, p = play(inventory, provision_pis)
        out = capsys.readouterr().out
        assert code == 2 and p is not None
        assert p.reporter.recaps["pi2"].failed and not p.reporter.recaps["pi1"].bad, out[-3000:]
        line = next((l for l in out.splitlines() if l.startswith("failed") and " pi2 " in l), "")
        assert f"{PUB} is not a public key ({why}" in line and f"rm {PUB}" in line, out[-3000:]
        keys = in_host("vps", f"cat {AUTHORIZED}")
        assert "hello" not in keys and len(keys.splitlines()) == 2, keys
        for line in keys.splitlines():
            assert in_host("vps", f"echo '{' '.join(line.split()[-3:-1])}' | ssh-keygen -lf - >/dev/null && echo ok").strip() == "ok"
        code, reports = run_verify(inventory, limit="pi1")
        assert code == 0 and reports["pi1"].passed
    finally:
        in_host("pi2", f"rm -f {PUB}")
    code, _ = play(inventory, provision_pis)  # derived again from the private key
    assert code == 0 and in_host("pi2", f"cat {PUB}").split()[:2] == good.split()[:2]


# ----------------------------------------------------------------- row 10: passwords off, by sshd -T
def test_passwords_off_are_read_from_sshd_t(inventory: Path, tmp_path: Path) -> None:
    doc = yaml.safe_load(inventory.read_text())
    doc["pis"]["pi1"]["disable_password_login"] = True
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(doc))
    shutil.copy(ports_file(inventory), ports_file(path))
    code, _ = play(path, provision_pis, limit="pi1")
    assert code == 0
    code, reports = run_verify(path, limit="pi1")
    c = check(reports["pi1"], "sshd: password login")
    assert code == 0 and c.passed and not c.warning and "passwordauthentication no" in c.detail, c
    # a drop-in read before ours (as cloud-init's 50- would be, were it named 05-) turns them on again
    in_host("pi1", "echo 'PasswordAuthentication yes' > /etc/ssh/sshd_config.d/05-cloud-like.conf && "
            + RELOAD_SSHD)
    try:
        code, reports = run_verify(path, limit="pi1")
    finally:
        in_host("pi1", "rm /etc/ssh/sshd_config.d/05-cloud-like.conf && " + RELOAD_SSHD)
    c = check(reports["pi1"], "sshd: password login")
    assert not c.passed and not reports["pi1"].passed and "passwordauthentication yes" in c.detail, c
