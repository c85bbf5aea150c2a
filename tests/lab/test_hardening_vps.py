"""Hardening of the VPS, on real hosts: one Pi cannot end another Pi's tunnel through the reaper, an
account pitunnel did not make is refused untouched, and the user's own Nginx site survives provisioning
and `teardown --purge`. The VPS serves a site of the user's before pitunnel ever runs."""

from __future__ import annotations

import io
import socket
import time
import urllib.request
from pathlib import Path

import paramiko
import pytest
import yaml

from lab import PortKnocker, SilentDrop, reachable, target, wait_recovered
from pitunnel.roles.site import provision as provision_site
from pitunnel.roles.site import teardown as teardown_site
from pitunnel.roles.site import provision_vps
from pitunnel.roles.vps.steps import teardown as teardown_vps
from tests.conftest import lab_up
from tests.lab.runs import in_host, play

pytestmark = pytest.mark.lab
VPS = "198.18.0.10"
POLL = 1  # the reaper reads the journal every second (roles/vps/defaults.yml reaper_poll)

# The user's own site: its server block in sites-available, enabled by a link, answering its own name.
USER_SITE = """\
server {
    listen 80;
    listen [::]:80;
    server_name www.user.example;
    root /var/www/usersite;
    index index.html;
    location / {
        try_files $uri $uri/ =404;
    }
}
"""
USER_SETUP = f"""set -e
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx >/dev/null
mkdir -p /var/www/usersite
echo "the user's own site" > /var/www/usersite/index.html
cat > /etc/nginx/sites-available/usersite <<'EOF'
{USER_SITE}EOF
ln -s /etc/nginx/sites-available/usersite /etc/nginx/sites-enabled/usersite
nginx -t 2>/dev/null && systemctl restart nginx
useradd --create-home --shell /bin/bash --comment 'Web app' webapp
echo 'data' > /home/webapp/app.txt
"""
# every file and link under /etc/nginx, with its content hash and mode
NGINX_TREE = r"""cd /etc/nginx && find . \( -type f -o -type l \) | sort | while read -r f; do
  if [ -L "$f" ]; then echo "$f -> $(readlink "$f")"; else echo "$f $(sha256sum < "$f" | cut -c1-16) $(stat -c %a:%U:%G "$f")"; fi
done"""
WEBAPP = "getent passwd webapp; getent shadow webapp | cut -d: -f2; getent group webapp; " \
         "find /home/webapp -printf '%p %m %u:%g %s\\n' | sort"


def user_site() -> str:
    request = urllib.request.Request(f"http://{VPS}/", headers={"Host": "www.user.example"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.read().decode()


@pytest.fixture(scope="module")
def lab() -> dict[str, object]:
    inventory = lab_up(2).inventory
    in_host("vps", USER_SETUP)
    assert user_site() == "the user's own site\n"
    before = {"nginx": in_host("vps", NGINX_TREE), "webapp": in_host("vps", WEBAPP)}
    assert "./sites-enabled/usersite -> /etc/nginx/sites-available/usersite" in str(before["nginx"])
    code, p = play(inventory, provision_site)
    assert code == 0
    return {"inventory": inventory, **before}


def test_user_site_coexists_with_provisioning(lab: dict) -> None:
    assert user_site() == "the user's own site\n"
    assert reachable(target("pi1")) and reachable(target("pi2"))  # the path tunnels, through the default server
    now = dict(line.split(" ", 1) for line in in_host("vps", NGINX_TREE).splitlines())
    was = dict(line.split(" ", 1) for line in str(lab["nginx"]).splitlines())
    changed = sorted(k for k in set(now) | set(was) if now.get(k) != was.get(k))
    pitunnel = [k for k in changed if "pitunnel" in k]
    # Debian's unmodified welcome site is set aside (and recorded); nothing else of the user's changes
    assert [k for k in changed if k not in pitunnel] == ["./sites-enabled/default"], changed
    code, p = play(Path(str(lab["inventory"])), provision_vps, limit="vps")  # a second run changes nothing
    assert code == 0 and p is not None and p.reporter.recaps["vps"].changed == 0


# ---------------------------------------------------------------- row 1: the reaper


def listeners() -> dict[str, str]:
    """Tunnel port -> the pid holding it (the Pis' sshd sessions)."""
    found = {}
    for line in in_host("vps", "ss -Htlnp").splitlines():
        words = line.split()
        if len(words) >= 6 and ('"sshd"' in words[5] or '"sshd-session"' in words[5]) \
                and not words[3].endswith(":12345"):
            found[words[3].rsplit(":", 1)[1]] = words[5].split("pid=")[1].split(",")[0]
    return found


def send_disconnect(key_text: str, reason: str) -> None:
    """Log in as the tunnel account with this key and leave with a disconnect of our own wording."""
    key = paramiko.Ed25519Key.from_private_key(io.StringIO(key_text))
    transport = paramiko.Transport(socket.create_connection((VPS, 12345), timeout=5))
    try:
        transport.connect(username="pitunnel", pkey=key)
        assert transport.is_authenticated()
        message = paramiko.Message()
        message.add_byte(paramiko.common.cMSG_DISCONNECT)
        message.add_int(11)  # SSH_DISCONNECT_BY_APPLICATION
        message.add_string(reason)
        message.add_string("")  # language tag
        transport._send_message(message)
        time.sleep(0.5)
    finally:
        transport.close()


def test_another_pis_disconnect_reason_ends_nothing(lab: dict) -> None:
    """Pi 2's real tunnel key sends a disconnect whose reason reads like sshd's forward failure for each
    of Pi 1's ports: Pi 1's sessions, listeners and reachability are untouched."""
    pi2_key = in_host("pi2", "cat /var/lib/pitunnel/.ssh/pitunnel_ed25519")
    assert "PRIVATE KEY" in pi2_key
    held = listeners()
    pi1_ports = ["12346", "20000"]
    assert set(pi1_ports) <= set(held), held
    log_before = in_host("vps", "journalctl -t pitunnel-reaper --no-pager -q | wc -l")
    # every line sshd logged with the text so far (a window of the last N lines misses it on OpenSSH 10,
    # whose sshd-session writes more lines per login); read by the syslog identifier the line carries, not by
    # unit: a session that logs and exits at once can leave journald no cgroup to name its unit from
    forged = "journalctl -t sshd -t sshd-session --no-pager -q -o cat | grep -cF 'cannot listen to port: 12346'"
    forged_before = int(in_host("vps", forged).strip() or 0)
    for port in pi1_ports:
        send_disconnect(pi2_key, f"cannot listen to port: {port}")
        send_disconnect(pi2_key, f"error: channel_setup_fwd_listener_tcpip: cannot listen to port: {port}")
    time.sleep(5 * POLL)
    assert int(in_host("vps", forged).strip() or 0) > forged_before  # sshd logged the forged reason
    assert listeners() == held  # same pids hold the same ports
    assert reachable(target("pi1"))
    assert in_host("vps", "journalctl -t pitunnel-reaper --no-pager -q | wc -l") == log_before


def test_real_stale_session_is_still_reaped(lab: dict) -> None:
    """Pi 1's connection vanishes silently while scanners knock on its public port; it reconnects at
    once, and the reaper ends its own stale session (and only that one)."""
    old = listeners()
    t = target("pi1")
    with PortKnocker(t.ssh_port), SilentDrop("pi1") as ended:
        seconds = wait_recovered(t, ended, 40)
    print(f"silent drop of pi1: reachable again after {seconds} s")
    assert seconds is not None, "pi1 not reachable within 40 s of a silent drop"
    now = listeners()
    assert now["12346"] != old["12346"] and now["20000"] != old["20000"]
    assert now["12347"] == old["12347"] and now["20001"] == old["20001"]  # pi2 untouched
    log = in_host("vps", "journalctl -t pitunnel-reaper --no-pager -q -o cat")
    print(log)
    assert f"ended stale session (pid {old['12346']}) holding port 12346" in log


# ---------------------------------------------------------------- row 4: accounts pitunnel did not make


def test_account_pitunnel_did_not_make_is_refused(lab: dict, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    doc = yaml.safe_load(Path(str(lab["inventory"])).read_text())
    doc["vps"]["vps"]["tunnel_user"] = "webapp"
    inventory = tmp_path / "webapp.yml"
    inventory.write_text(yaml.safe_dump(doc))
    sshd_dropin = in_host("vps", "cat /etc/ssh/sshd_config.d/10-pitunnel.conf")
    capsys.readouterr()
    code, _ = play(inventory, provision_vps, limit="vps")
    out = capsys.readouterr().out
    assert code != 0
    assert "account webapp exists and pitunnel did not create it" in out, out
    assert "changed " not in out, out  # nothing at all changed on the VPS
    assert in_host("vps", WEBAPP) == lab["webapp"]
    assert in_host("vps", "cat /etc/ssh/sshd_config.d/10-pitunnel.conf") == sshd_dropin

    code, _ = play(inventory, lambda p: teardown_vps(p, purge=True), limit="vps")
    out = capsys.readouterr().out
    assert code != 0
    assert "account webapp exists and pitunnel did not create it" in out, out
    assert "changed " not in out, out
    assert in_host("vps", WEBAPP) == lab["webapp"]
    assert in_host("vps", "cat /etc/ssh/sshd_config.d/10-pitunnel.conf") == sshd_dropin
    assert reachable(target("pi1"))


# ---------------------------------------------------------------- teardown --purge


def test_teardown_purge_keeps_the_users_nginx(lab: dict) -> None:
    code, p = play(Path(str(lab["inventory"])), lambda p: teardown_site(p, purge=True))
    assert code == 0
    assert in_host("vps", "dpkg-query -W -f '${db:Status-Status}' nginx") == "installed"
    assert user_site() == "the user's own site\n"
    assert in_host("vps", NGINX_TREE) == lab["nginx"]  # byte for byte, links too
    assert in_host("vps", "getent passwd pitunnel || echo gone").strip() == "gone"
    # what pitunnel installed itself goes: autossh on the Pis
    assert in_host("pi1", "dpkg-query -W -f '${db:Status-Status}' autossh 2>/dev/null || echo gone").strip() \
        in ("gone", "not-installed")


def test_users_default_server_is_left_to_the_user(lab: dict, capsys: pytest.CaptureFixture[str]) -> None:
    """The user's site is the default server (Debian's welcome site disabled by the user): provisioning
    does not claim default_server, nor touch the user's files; teardown --purge does not put Debian's
    site back."""
    in_host("vps", "rm /etc/nginx/sites-enabled/default && "
                   "sed -i 's/listen 80;/listen 80 default_server;/; s/listen \\[::\\]:80;/listen [::]:80 default_server;/' "
                   "/etc/nginx/sites-available/usersite && systemctl restart nginx")
    with urllib.request.urlopen(f"http://{VPS}/", timeout=5) as resp:  # by address: the default server
        assert resp.read().decode() == "the user's own site\n"
    before = in_host("vps", NGINX_TREE)
    capsys.readouterr()
    code, _ = play(Path(str(lab["inventory"])), provision_vps, limit="vps")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "nginx default server - yours is (/etc/nginx/sites-enabled/usersite)" in out, out
    assert "default_server" not in in_host("vps", "cat /etc/nginx/sites-enabled/pitunnel.conf")
    with urllib.request.urlopen(f"http://{VPS}/", timeout=5) as resp:
        assert resp.read().decode() == "the user's own site\n"
    assert user_site() == "the user's own site\n"
    now = in_host("vps", NGINX_TREE)
    assert [l for l in now.splitlines() if "pitunnel" not in l] == before.splitlines()

    code, _ = play(Path(str(lab["inventory"])), lambda p: teardown_vps(p, purge=True), limit="vps")
    assert code == 0
    assert in_host("vps", NGINX_TREE) == before
    with urllib.request.urlopen(f"http://{VPS}/", timeout=5) as resp:
        assert resp.read().decode() == "the user's own site\n"
