"""The status page (issue 28): `status_page:` in the inventory, what provision-vps and teardown send for it, and
the generator the VPS runs (pitunnel/roles/vps/statusgen.py: history, SVG strips, the page), run here as it is."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, InventoryError, load_inventory
from pitunnel.ops import Absent, File, Op, Packages, Pruned
from pitunnel.roles.vps import role as vps_role
from pitunnel.roles.vps import statusgen as gen
from pitunnel.roles.vps import steps as vps_steps

D = vps_role.VPS_DEFAULTS
INVENTORY = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main:
    address: 203.0.113.1
    public_name: vps.example.com
    acme: {email: admin@example.com}
    status_page: {basic_auth_file: status.htpasswd}
pis:
  pi1:
    address: 10.0.0.1
    tunnels:
      ssh: {type: ssh, remote_port: 20000}
      api: {type: http, remote_port: 20001}
"""
NOW = 1_780_000_000.0  # a Unix time; its minute is NOW // 60


def write(tmp: Path, text: str) -> Path:
    (tmp / "status.htpasswd").write_text("alice:$apr1$abc$def\n")
    (tmp / "status.htpasswd").chmod(0o600)
    path = tmp / "hosts.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def problem(tmp: Path, text: str) -> str:
    with pytest.raises(InventoryError) as caught:
        load_inventory(write(tmp, text), save_allocations=False)
    [found] = caught.value.problems
    return str(found)


def text_of(ops: list[Op], path: str) -> str:
    [op] = [o for o in ops if isinstance(o, File) and o.path == path]
    return op.wanted(FileState(exists=False))


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return load_inventory(write(tmp_path, INVENTORY), save_allocations=False)


# ---------------------------------------------------------------------------
# the inventory


def test_status_page_is_read_with_its_default_path(inv: Inventory, tmp_path: Path) -> None:
    page = inv.vps["main"].status_page
    assert page is not None and page.path == "/pitunnel-status/" and page.basic_auth_file == tmp_path / "status.htpasswd"
    bare = load_inventory(write(tmp_path, INVENTORY.replace("    status_page: {basic_auth_file: status.htpasswd}\n", "")),
                          save_allocations=False)
    assert bare.vps["main"].status_page is None  # off by default


@pytest.mark.parametrize(("old", "new", "says"), [
    ("{basic_auth_file: status.htpasswd}", "{path: /st/}",
     "vps.main.status_page.basic_auth_file: required key 'basic_auth_file' is missing"),
    ("{basic_auth_file: status.htpasswd}", "{basic_auth_file: nowhere}", "vps.main.status_page.basic_auth_file: file "),
    ("{basic_auth_file: status.htpasswd}", "{basic_auth_file: status.htpasswd, path: /st}",
     "vps.main.status_page.path: '/st' is"),
    ("{basic_auth_file: status.htpasswd}", "{basic_auth_file: status.htpasswd, pth: /st/}", "did you mean 'path'?"),
    ("    acme: {email: admin@example.com}\n", "",
     "vps.main.status_page: the status page asks for a password (basic auth), which would cross in clear over plain "
     "HTTP. Fix: give VPS 'main' 'public_name' and 'acme:' (or tls_certificate and tls_key), or remove status_page"),
    ("api: {type: http, remote_port: 20001}", "api: {type: http, remote_port: 20001, path: /pitunnel-status/api/}",
     "vps.main.status_page.path: the status page's path '/pitunnel-status/' on VPS 'main' overlaps "
     "pis.pi1.tunnels.api.path's '/pitunnel-status/api/' (line 13)"),
])
def test_a_bad_status_page_is_one_problem_naming_its_key(tmp_path: Path, old: str, new: str, says: str) -> None:
    found = problem(tmp_path, INVENTORY.replace(old, new))
    assert says in found and "hosts.yml:" in found


# ---------------------------------------------------------------------------
# what provision-vps and teardown send


def test_the_page_is_a_location_behind_basic_auth_in_pitunnels_server(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"], certs=found_cert())
    location = text_of(ops, f"{D['nginx_locations_dir']}/status-page.conf")
    assert "location ^~ /pitunnel-status/ {" in location
    assert f"alias {D['status_page_state']}/www/;" in location
    assert f"auth_basic_user_file {D['nginx_auth_dir']}/status-page.htpasswd;" in location
    [auth] = [o for o in ops if isinstance(o, File) and o.path.endswith("/status-page.htpasswd")]
    assert auth.secret and auth.mode == 0o640 and auth.group == "www-data"
    assert text_of(ops, f"{D['nginx_auth_dir']}/status-page.htpasswd") == "alice:$apr1$abc$def\n"
    pruned = {o.directory: o.keep for o in ops if isinstance(o, Pruned)}
    assert "status-page.conf" in pruned[D["nginx_locations_dir"]] and "status-page.htpasswd" in pruned[D["nginx_auth_dir"]]
    assert D["status_page_package"] in vps_steps.packages(inv.vps["main"]).names
    settings = json.loads(text_of(ops, D["status_page_config"]))
    assert settings["certificates"] == [["vps.example.com", f"{D['letsencrypt_dir']}/live/pitunnel-vps.example.com/fullchain.pem"]]
    assert text_of(ops, D["status_page_script"]) == Path(gen.__file__).read_text()


def found_cert() -> vps_steps.AcmeFound:
    from pitunnel.roles.vps import acme
    return acme.AcmeFound({"vps.example.com": acme.CertState("https://ca.example.net/dir", True, False, "Jan  1 00:00:00 2031 GMT")})


def test_before_its_certificate_the_page_asks_for_no_password(inv: Inventory) -> None:
    location = text_of(vps_steps.converge_ops(inv, inv.vps["main"]), f"{D['nginx_locations_dir']}/status-page.conf")
    assert "return 503" in location and "auth_basic" not in location


def test_the_writer_makes_the_page_without_metrics(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    script, unit = text_of(ops, D["metrics_path"]), text_of(ops, D["metrics_unit_path"])
    assert f"python3 {D['status_page_script']} {D['status_page_config']}" in script
    assert 'mv -f "$out.tmp" "$out"' not in script  # no metrics file without metrics: true
    assert "StateDirectory=pitunnel-status" in unit and "ReadWritePaths" not in unit
    absent = {o.path for o in ops if isinstance(o, Absent)}
    assert f"{D['metrics_textfile_dir']}/pitunnel.prom" in absent and D["metrics_dropin"] in absent
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_with_metrics_too_the_writer_does_both(tmp_path: Path) -> None:
    both = load_inventory(write(tmp_path, INVENTORY.replace("    status_page:", "    metrics: true\n    status_page:")),
                          save_allocations=False)
    ops = vps_steps.converge_ops(both, both.vps["main"])
    script, unit = text_of(ops, D["metrics_path"]), text_of(ops, D["metrics_unit_path"])
    assert 'mv -f "$out.tmp" "$out"' in script and f"python3 {D['status_page_script']}" in script
    assert f"ReadWritePaths={D['metrics_textfile_dir']}" in unit and "StateDirectory=pitunnel-status" in unit
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_without_status_page_its_files_and_history_go(tmp_path: Path) -> None:
    bare = load_inventory(write(tmp_path, INVENTORY.replace("    status_page: {basic_auth_file: status.htpasswd}\n", "")),
                          save_allocations=False)
    ops = vps_steps.converge_ops(bare, bare.vps["main"])
    absent = {o.path for o in ops if isinstance(o, Absent)}
    assert {D["status_page_script"], D["status_page_config"], D["status_page_state"]} <= absent
    pruned = {o.directory: o.keep for o in ops if isinstance(o, Pruned)}
    assert "status-page.conf" not in pruned[D["nginx_locations_dir"]]
    assert "status-page.htpasswd" not in pruned[D["nginx_auth_dir"]]
    assert not any(isinstance(o, File) and "status" in o.path for o in ops)
    torn = {o.path for o in vps_steps.teardown_ops(bare.vps["main"], purge=True) if isinstance(o, Absent)}
    assert D["status_page_state"] in torn and "/etc/nginx/pitunnel" in torn
    assert D["status_page_package"] not in vps_steps.packages(bare.vps["main"]).names


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here (nginx -t checks skipped)")
def test_nginx_t_accepts_the_location(inv: Inventory, tmp_path: Path) -> None:  # pragma: no cover - needs nginx
    location = text_of(vps_steps.converge_ops(inv, inv.vps["main"], certs=found_cert()),
                       f"{D['nginx_locations_dir']}/status-page.conf")
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\nhttp {{\nserver {{\n"
                    f"listen 8080;\n{location}\n}}\n}}\n")
    result = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# the generator's history


def test_a_minute_both_up_and_down_counts_half_and_a_gap_is_not_seen() -> None:
    minute = int(NOW // 60)
    e = gen.record(None, True, int(NOW) - 100, minute, NOW)
    e = gen.record(e, False, None, minute, NOW + 10)
    e = gen.record(e, True, int(NOW) + 20, minute, NOW + 20)
    assert e["bits"] == "~" and e["up"] and e["changed"] == int(NOW) + 20
    e = gen.record(e, True, int(NOW) + 20, minute + 3, NOW + 180)
    e = gen.record(e, False, None, minute + 4, NOW + 240)
    e = gen.record(e, False, None, minute + 4, NOW + 250)
    assert e["bits"] == "~--10" and e["end"] == minute + 4 and e["changed"] == NOW + 240
    assert gen.uptime(e["bits"]) == pytest.approx(1.5 / 3)
    assert e["connects"] == {gen.day(NOW): 2}  # two sessions began that day


def test_history_keeps_seven_days_and_a_size_cap() -> None:
    minute = int(NOW // 60)
    e = gen.record(None, True, None, minute, NOW)
    for m in range(1, gen.WEEK + 50):
        e = gen.record(e, m % 2 == 0, None, minute + m, NOW + m * 60)
    assert len(e["bits"]) == gen.WEEK and e["bits"].endswith("010")
    far = gen.record(e, True, None, minute + 10 * gen.WEEK, NOW + 10 * gen.WEEK * 60)
    assert len(far["bits"]) == gen.WEEK and far["bits"] == "-" * (gen.WEEK - 1) + "1"
    history = {f"pi{i}/ssh": json.loads(json.dumps(e)) for i in range(20)}
    bounded = gen.bound(history, cap=50_000)
    assert len(json.dumps(bounded)) <= 50_000
    assert all(0 < len(x["bits"]) < gen.WEEK and x["bits"] == e["bits"][-len(x["bits"]):] for x in bounded.values())
    assert gen.bound({"a/b": dict(e)}, cap=gen.CAP)["a/b"]["bits"] == e["bits"]  # under the cap: all kept


def test_connection_counts_keep_seven_days() -> None:
    e = gen.record(None, True, int(NOW - 9 * 86400), int(NOW // 60), NOW)
    assert e["connects"] == {}  # a session begun nine days ago is outside the week shown
    e = gen.record(e, True, int(NOW - 86400), int(NOW // 60), NOW)
    assert e["connects"] == {gen.day(NOW - 86400): 1}


def test_tunnels_gone_from_the_vps_leave_the_history() -> None:
    history = gen.update({}, ["pi1 ssh 0.0.0.0:20000 1 1779999000", "pi2 web 127.0.0.1:20001 0 -", "junk"], NOW, {})
    assert list(history) == ["pi1/ssh", "pi2/web"] and history["pi1/ssh"]["up"] and not history["pi2/web"]["up"]
    assert list(gen.update(history, ["pi2 web 127.0.0.1:20001 0 -"], NOW + 60, {})) == ["pi2/web"]


def test_errors_are_read_by_port_and_shown_without_addresses_or_keys() -> None:
    lines = [
        "1780000001.5 vps sshd[10]: error: bind [127.0.0.1]:20001: Address already in use",
        "1780000002.5 vps sshd[10]: error: channel_setup_fwd_listener_tcpip: cannot listen to port: 20001",
        "1780000003.5 vps sshd-session[11]: Received request from 198.51.100.7 port 40000 to remote forward to host "
        "127.0.0.1 port 20005, but the request was denied.",
        "1780000004.5 vps pitunnel-reaper[12]: ended stale session (pid 99) holding port 20000: its key SHA256:abc",
        "1780000005.5 vps sshd[13]: Accepted publickey for pitunnel from 198.51.100.7 port 1 ssh2: ED25519 SHA256:x",
    ]
    found = gen.errors(lines)
    assert set(found) == {20000, 20001, 20005} and found[20001][0] == 1780000002.5
    assert "SHA256" not in repr(found) and "198.51" not in repr(found)
    history = gen.update({}, ["pi1 api 127.0.0.1:20001 0 -"], NOW, found)
    assert history["pi1/api"]["error"] == [1780000002.5, found[20001][1]]


# ---------------------------------------------------------------------------
# the page


def test_the_strip_has_one_box_per_segment_coloured_by_uptime() -> None:
    bits = "1" * 30 + "0" * 30 + "-" * 30 + "1" * 29 + "0"
    svg = gen.strip(bits, 120, 4, NOW)
    assert svg.startswith("<svg") and svg.count("<rect") == 4
    assert [c for c in ("#2e7d32", "#c62828", "#bbb", "#f9a825") if c in svg] == ["#2e7d32", "#c62828", "#bbb", "#f9a825"]
    assert svg.index("#2e7d32") < svg.index("#c62828") < svg.index("#bbb") < svg.index("#f9a825")  # oldest first
    assert "96.7% up" in svg and "not seen" in svg
    assert gen.strip("", 120, 4, NOW).count("#bbb") == 4
    assert gen.uptime("11-0") == pytest.approx(2 / 3) and gen.uptime("--") is None


def test_the_page_shows_each_tunnel_and_escapes_every_name() -> None:
    history = gen.update({}, ["pi1 ssh 0.0.0.0:20000 1 1779990000", "pi2 web 127.0.0.1:20001 0 -"], NOW,
                         {20001: (NOW - 5, "sshd refused its forward (not permitted)")})
    history["<b>x/<script>alert(1)</script>"] = history.pop("pi2/web")
    page = gen.render('vps"<i>', history, [("vps.example.com", NOW + 10 * 86400), ("other", None)], NOW)
    assert "<script>" not in page and "<b>x" not in page and "<i>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and 'vps&quot;&lt;i&gt;' in page
    assert '<tr class="tunnel up" data-pi="pi1" data-tunnel="ssh" data-state="up">' in page
    assert 'data-state="down"' in page and "sshd refused its forward (not permitted)" in page
    assert '<span id="summary">1 of 2 tunnels up.</span>' in page
    assert '<li class="warn">vps.example.com: expires' in page and "(in 10 days)" in page
    assert "other: expiry unknown" in page
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page  # nothing loaded


def test_the_generator_runs_as_the_vps_runs_it(tmp_path: Path) -> None:
    """The file provision-vps copies, run by python3 with the writer's lines on its standard input."""
    config = tmp_path / "status-page.json"
    config.write_text(json.dumps({"vps": "main", "state_dir": str(tmp_path), "certificates": []}))
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    (tmp_path / "journalctl").write_text("#!/bin/sh\necho '1780000002.5 vps sshd[1]: error: "
                                         "channel_setup_fwd_listener_tcpip: cannot listen to port: 20001'\n")
    (tmp_path / "journalctl").chmod(0o755)
    for _ in range(2):  # a second run reads the history the first wrote
        subprocess.run([sys.executable, gen.__file__, str(config)], input="pi1 ssh 0.0.0.0:20000 1 1779990000\n"
                       "pi1 api 127.0.0.1:20001 0 -\n", text=True, env=env, check=True, timeout=30)
    history = json.loads((tmp_path / "history.json").read_text())
    assert set(history) == {"pi1/ssh", "pi1/api"} and history["pi1/api"]["error"][0] == 1780000002.5
    assert (tmp_path / "history.json").stat().st_mode & 0o777 == 0o600
    page = tmp_path / "www" / "index.html"
    assert page.stat().st_mode & 0o777 == 0o644 and 'data-tunnel="api" data-state="down"' in page.read_text()


def test_each_file_sent_for_the_page_is_named_and_restarts_or_reloads_what_reads_it(inv: Inventory) -> None:
    ops = {o.path: o for o in vps_steps.converge_ops(inv, inv.vps["main"], certs=found_cert()) if isinstance(o, File)}
    script, settings = ops[D["status_page_script"]], ops[D["status_page_config"]]
    auth, location = ops[f"{D['nginx_auth_dir']}/status-page.htpasswd"], ops[f"{D['nginx_locations_dir']}/status-page.conf"]
    assert (script.title, script.mode, script.notify) == ("status page generator", 0o755, ("restart metrics",))
    assert (auth.title, auth.notify) == ("basic auth for the status page", ("reload nginx",))
    assert (location.title, location.notify) == ("nginx path /pitunnel-status/ -> status page", ("reload nginx",))
    assert settings.title == "status page settings" and text_of(list(ops.values()), D["status_page_config"]) == json.dumps(
        {"vps": "main", "state_dir": D["status_page_state"], "certificates": [
            ["vps.example.com", f"{D['letsencrypt_dir']}/live/pitunnel-vps.example.com/fullchain.pem"]]}, indent=1) + "\n"
