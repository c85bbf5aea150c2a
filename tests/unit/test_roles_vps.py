"""The VPS role's decisions without a VPS: what provision-vps does first and what it leaves alone, what the
Pis' keys step reads and writes, the HTTP routes, and teardown; on scripted hosts (tests/unit/fake_hosts.py)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, Listener
from pitunnel.ops import File, PackagesAbsent, Pruned
from pitunnel.report import Reporter
from pitunnel.runner import Mode, StepFailed
from pitunnel.sshkeys import BadPublicKey, PublicKey, parse_public_key
from pitunnel.roles.contract import PiOffer, VpsFacts
from pitunnel.roles.site import provision_vps
from pitunnel.roles.vps import authorized as vps_authorized
from pitunnel.roles.vps import nginx as vps_nginx
from pitunnel.roles.vps import role as vps_role
from pitunnel.roles.vps import steps as vps
from tests.unit.fake_hosts import ACCOUNT, FakeHost, in_order, lines, load, mode_of, play_on
from tests.unit.test_templates import keygen

D = vps_role.VPS_DEFAULTS

INVENTORY = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main: {address: 203.0.113.1, tls_certificate: /etc/ssl/c.pem, tls_key: /etc/ssl/c.key}
pis:
  alpha:
    address: 10.0.0.2
    vps: main
    tunnels:
      ssh: {type: ssh, remote_port: 20022, public: true}
      web: {type: http, local_port: 8080, remote_port: 20080, path: /alpha/, websocket: true}
      cam: {type: http, local_port: 8081, remote_port: 20081, server_name: cam.example.com, basic_auth_file: cam.htpasswd,
            client_max_body_size: 50m}
  beta:
    address: 10.0.0.3
    vps: main
    tunnels:
      ssh: {type: ssh, remote_port: 20023}
"""
PERMITTED = "permitlisten 0.0.0.0:20022 127.0.0.1:20080 127.0.0.1:20081 127.0.0.1:20023"


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    return load(tmp_path, INVENTORY, {"cam.htpasswd": "alice:$apr1$x$y\n"})


@pytest.fixture(scope="module")
def key() -> str:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        return " ".join(keygen(Path(d) / "k").split()[:2])


@pytest.fixture(scope="module")
def key2() -> str:
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        return " ".join(keygen(Path(d) / "k").split()[:2])


def state(text: str, owner: str = "pitunnel", mode: str = "600") -> str:
    return f"{owner}:{owner}:{mode}\n" + base64.b64encode(text.encode()).decode()


def main_host(*first: tuple[str, str], **kw: object) -> FakeHost:
    return FakeHost("main", [*first, ("|| echo MISSING", ACCOUNT), ("ssh_host_", "cur ssh-ed25519 AAAAone root@vps\n\ncur ssh-rsa AAAAtwo\n"),
                             ("ss -Htln", "LISTEN 0 128 0.0.0.0:20022 0.0.0.0:*\n"), ("permitlisten", PERMITTED),
                             ("authorized_keys", "ABSENT")], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ the Pis' keys


def test_authorise_writes_the_offered_keys_and_tells_the_pis_what_they_need(inv: Inventory, key: str,
                                                                           capsys: pytest.CaptureFixture[str]) -> None:
    host = main_host()
    offers = [PiOffer("alpha", parse_public_key(key), (Listener(True, 20022),)), PiOffer("beta", None, (Listener(False, 20023),))]
    found = vps.authorise(host, inv, inv.vps["main"], offers, Reporter(colour=False), Mode())  # type: ignore[arg-type]
    assert found == VpsFacts(("ssh-ed25519 AAAAone", "ssh-rsa AAAAtwo"), frozenset({"0.0.0.0:20022"}))
    wanted = vps_authorized.authorized_keys(inv, inv.vps["main"], {"alpha": key}).wanted(FileState(False))
    assert host.applied(base64.b64encode(wanted.encode()).decode()) and "pitunnel:beta" not in wanted
    assert len(host.scripts) == 2  # one read for the checks and the keys, one write
    in_order(lines(capsys), ["ok main tunnel account pitunnel - present", "ok main VPS host keys - 2 host keys read",
                             "ok main listeners on the VPS - read", "ok main listeners sshd permits the tunnel account - read",
                             "changed main authorized keys of the Pis - create"])


def test_authorise_again_changes_nothing_in_one_round_trip(inv: Inventory, key: str,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    wanted = vps_authorized.authorized_keys(inv, inv.vps["main"], {"alpha": key}).wanted(FileState(False))
    host = main_host(("authorized_keys", state(wanted)))
    vps.authorise(host, inv, inv.vps["main"], [PiOffer("alpha", parse_public_key(key), ())],  # type: ignore[arg-type]
                  Reporter(colour=False), Mode())
    assert len(host.scripts) == 1 and host.ops == []
    assert "ok main authorized keys of the Pis - already as wanted" in lines(capsys)


def test_unauthorise_needs_the_account(inv: Inventory, key: str, key2: str) -> None:
    gone = FakeHost("main", [("|| echo MISSING", "MISSING")])
    vps.unauthorise(gone, inv, inv.vps["main"], frozenset({"alpha"}), Reporter(colour=False), Mode())  # type: ignore[arg-type]
    assert len(gone.scripts) == 1 and gone.ops == []
    both = vps_authorized.authorized_keys(inv, inv.vps["main"], {"alpha": key, "beta": key2}).wanted(FileState(False))
    host = main_host(("authorized_keys", state(both)))
    vps.unauthorise(host, inv, inv.vps["main"], frozenset({"alpha"}), Reporter(colour=False), Mode())  # type: ignore[arg-type]
    left = vps_authorized.authorized_keys(inv, inv.vps["main"], {"beta": key2}).wanted(FileState(False))
    assert host.applied(base64.b64encode(left.encode()).decode())


def test_unauthorise_in_check_mode_says_the_keys_would_change_and_sends_no_change(
        inv: Inventory, key: str, key2: str, capsys: pytest.CaptureFixture[str]) -> None:
    """teardown --check of one Pi: the VPS's account is read (check mode too), and its keys file would change."""
    both = vps_authorized.authorized_keys(inv, inv.vps["main"], {"alpha": key, "beta": key2}).wanted(FileState(False))
    host = main_host(("authorized_keys", state(both)))
    vps.unauthorise(host, inv, inv.vps["main"], frozenset({"alpha"}), Reporter(colour=False), Mode(check=True))  # type: ignore[arg-type]
    assert host.ops == []
    assert any(line.startswith("would change main authorized keys of the Pis") for line in lines(capsys))


# ------------------------------------------------------------------------------------------ one key, two Pis (issue 22)
def written(host: FakeHost) -> str:
    """The authorized_keys the keys step wrote on `host`."""
    (body,) = [b for b in host.ops if "authorized_keys" in b]
    found = re.search(r"printf %s (\S*) \| base64 -d > new", body)
    assert found is not None
    return base64.b64decode(found.group(1)).decode()


def test_a_pi_offering_another_pis_key_is_refused_and_the_pi_it_belongs_to_keeps_it(
        inv: Inventory, key: str, key2: str, capsys: pytest.CaptureFixture[str]) -> None:
    """alpha (first in the inventory, so first in the file) copies beta's key into its .pub: before, its
    line came first and beta's tunnel got alpha's permitlisten."""
    now = vps_authorized.authorized_keys(inv, inv.vps["main"], {"alpha": key, "beta": key2}).wanted(FileState(False))
    host = main_host(("authorized_keys", state(now)))
    offers = [PiOffer("alpha", parse_public_key(key2), (Listener(True, 20022),)),
              PiOffer("beta", parse_public_key(key2), (Listener(False, 20023),))]
    found = vps.authorise(host, inv, inv.vps["main"], offers, Reporter(colour=False), Mode())  # type: ignore[arg-type]
    assert found.refused == frozenset({"alpha"})
    assert host.ops == []  # nothing to write: alpha keeps its own key's line, beta its own
    seen = [line for line in lines(capsys) if "tunnel key on main" in line]
    assert len(seen) == 1 and seen[0].startswith("failed alpha tunnel key on main - refused: its tunnel key SHA256:")
    assert "is beta's (authorised for beta on main first); nothing written for alpha, beta keeps its key" in seen[0]


def test_a_pi_is_refused_another_pis_key_before_anything_is_written_the_other_pis_keys_are(
        inv: Inventory, key: str, key2: str, capsys: pytest.CaptureFixture[str]) -> None:
    only_beta = vps_authorized.authorized_keys(inv, inv.vps["main"], {"beta": key2}).wanted(FileState(False))
    host = main_host(("authorized_keys", state(only_beta)))
    offers = [PiOffer("alpha", parse_public_key(key2), ()), PiOffer("beta", parse_public_key(key2), ())]
    found = vps.authorise(host, inv, inv.vps["main"], offers, Reporter(colour=False), Mode())  # type: ignore[arg-type]
    assert found.refused == frozenset({"alpha"}) and host.ops == []
    # a key neither had on this VPS, offered by both (first provision): whose it is cannot be told
    host = main_host()
    found = vps.authorise(host, inv, inv.vps["main"], offers, Reporter(colour=False), Mode())  # type: ignore[arg-type]
    assert found.refused == frozenset({"alpha", "beta"}) and written(host) == ""
    seen = [line for line in lines(capsys) if "tunnel key on main" in line and "cannot tell" in line]
    assert [line.split()[1] for line in seen] == ["alpha", "beta"]
    assert "is offered for beta too, and main cannot tell whose it is; written for neither" in seen[0]


def test_a_key_the_file_lists_for_two_pis_is_kept_for_neither(inv: Inventory, key: str, key2: str) -> None:
    """Written by hand, or by pitunnel before it checked: sshd gives the second Pi the first one's listeners."""
    alpha, beta = inv.pis["alpha"], inv.pis["beta"]
    text = vps_authorized.authorized_line(inv.vps["main"], alpha.first_path, key2) + "\n" + vps_authorized.authorized_line(inv.vps["main"], beta.first_path, key2) + "\n"
    host = main_host(("authorized_keys", state(text)))
    offers = [PiOffer("alpha", parse_public_key(key), ()), PiOffer("beta", parse_public_key(key2), ())]
    # alpha offers its own key again: nothing is shared any more, each Pi has its own line
    found = vps.authorise(host, inv, inv.vps["main"], offers, Reporter(colour=False), Mode())  # type: ignore[arg-type]
    assert found.refused == frozenset()
    assert vps_authorized.parse_authorized_keys(written(host)) == {"alpha": [key], "beta": [key2]}
    host = main_host(("authorized_keys", state(text)))
    found = vps.authorise(host, inv, inv.vps["main"], [], Reporter(colour=False), Mode())  # type: ignore[arg-type]
    assert found.refused == frozenset({"alpha", "beta"}) and written(host) == ""


def test_settle_keys_covers_next_keys_and_leaves_the_refused_pi_what_the_file_has(key: str, key2: str) -> None:
    nxt = "ssh-ed25519 AAAAnext"
    before = {"alpha": [key], "beta": [key2, nxt]}  # beta is half way through a rotation: its next key authorised
    keys, shared = vps_authorized.settle_keys(before, {"alpha": [nxt], "beta": [key2, nxt]})
    assert keys == {"alpha": [key], "beta": [key2, nxt]} and shared == [vps_authorized.SharedKey(nxt, ("alpha", "beta"), "beta")]
    # beta's next key, made on beta, that alpha already holds here: beta is refused it, its rotation stalls safely
    keys, shared = vps_authorized.settle_keys({"alpha": [nxt], "beta": [key2]}, {"alpha": [nxt], "beta": [key2, nxt]})
    assert keys == {"alpha": [nxt], "beta": [key2]} and shared[0].refused == ("beta",)
    assert vps_authorized.settle_keys(before, {"alpha": [key], "beta": [key2]}) == ({"alpha": [key], "beta": [key2]}, [])


def test_what_the_vps_reads_of_itself() -> None:
    assert vps.HOST_KEYS.process("cur ssh-ed25519 A root@vps\ncur ssh-rsa B\n").current == ("ssh-ed25519 A", "ssh-rsa B")
    fact = vps.permitted_fact(load_vps())
    assert "sshd -T -C user=pitunnel,host=pitunnel,addr=192.0.2.1 " in fact.script
    assert fact.process("permitlisten 0.0.0.0:20022 127.0.0.1:20023\n") == frozenset({"0.0.0.0:20022", "127.0.0.1:20023"})
    assert fact.process("") == frozenset()
    loopback, public = Listener(public=False, port=20023), Listener(public=True, port=20022)
    assert vps.permits(frozenset({"127.0.0.1:*"}), loopback) and not vps.permits(frozenset({"127.0.0.1:*"}), public)
    assert vps.permits(frozenset({"0.0.0.0:20022"}), public)  # as an older pitunnel wrote it: the listeners themselves
    assert not vps.permits(frozenset({"0.0.0.0:20023"}), loopback) and not vps.permits(frozenset({"any"}), loopback)
    seen = vps.account_observer(load_vps())
    assert seen.fact.process(ACCOUNT) is True and seen.fact.process("MISSING\n") is False
    assert (seen.describe(True), seen.describe(False)) == ("present", "missing")
    assert seen.title == "tunnel account pitunnel" and "getent passwd pitunnel" in seen.fact.script


def load_vps():  # type: ignore[no-untyped-def]
    from pitunnel.inventory import VpsSpec
    return VpsSpec(name="main", role="vps", address="203.0.113.1", port=22, user="root", key=None, password_file=None,
                   sudo_password_file=None, host_key=None, connect_timeout=5)


# ----------------------------------------------------------------------------------------------- routes


def test_each_http_tunnel_is_one_route_named_by_pi_and_tunnel(inv: Inventory) -> None:
    web, cam = vps_nginx.http_routes(inv, inv.vps["main"])
    assert (web.pi, web.name, web.port, web.path, web.server_name, web.auth_file, web.websocket) == (
        "alpha", "web", 20080, "/alpha/", None, None, True)
    assert (cam.server_name, cam.auth_file, cam.client_max_body_size) == (
        "cam.example.com", f"{D['nginx_auth_dir']}/alpha_cam.htpasswd", "50m")
    assert cam.auth_source == inv.path.parent / "cam.htpasswd" and cam.upstream == "pitunnel_alpha_cam"
    variables = vps_nginx.route_vars(cam)
    assert variables["auth_source"] == str(cam.auth_source) and variables["file_stem"] == "alpha_cam"
    assert vps_nginx.route_vars(web)["auth_source"] is None and vps_nginx.route_vars(web)["upstream"] == "pitunnel_alpha_web"
    context = vps.context(inv, inv.vps["main"], claim_default=False)
    assert context["listens"] == ["127.0.0.1:*", "0.0.0.0:*"]
    assert context["claim_default"] is False and [t["name"] for t in context["tunnels"]] == ["web", "cam"]
    assert (context["http_port"], context["https_port"], context["tls_certificate"]) == (80, 443, "/etc/ssl/c.pem")


def test_nginx_files_one_per_route_the_password_file_secret(inv: Inventory) -> None:
    ops = vps.converge_ops(inv, inv.vps["main"])
    files = {op.path: op for op in ops if isinstance(op, File)}
    auth = files[f"{D['nginx_auth_dir']}/alpha_cam.htpasswd"]
    assert auth.secret and auth.mode == 0o640 and auth.group == "www-data"
    assert auth.wanted(FileState(False)) == "alice:$apr1$x$y\n"
    assert f"{D['nginx_sites_dir']}/pitunnel-alpha_cam.conf" in files  # server_name: a server of its own
    assert f"{D['nginx_locations_dir']}/alpha_web.conf" in files  # path: a location in pitunnel's server
    pruned = {op.directory: op.keep for op in ops if isinstance(op, Pruned)}
    assert pruned == {D["nginx_sites_dir"]: frozenset({"pitunnel-alpha_cam.conf"}),
                      D["nginx_locations_dir"]: frozenset({"alpha_web.conf"}),
                      D["nginx_auth_dir"]: frozenset({"alpha_cam.htpasswd"})}
    assert all("reload nginx" in op.notify for op in files.values() if op.path.startswith("/etc/nginx"))


def test_handlers_reload_only_what_changed_and_prove_sshd(inv: Inventory) -> None:
    host = FakeHost("main", fresh_login=False)
    handlers = {h.name: h for h in vps.handlers(host)}  # type: ignore[arg-type]
    assert handlers["restart reaper"].commands == ["systemctl daemon-reload", "systemctl restart pitunnel-reaper.service"]
    assert handlers["reload nginx"].commands == [
        "if [ -x /usr/sbin/nginx ]; then nginx -t 2>&1 && systemctl reload-or-restart nginx; fi"]
    assert handlers["daemon-reload"].commands == ["systemctl daemon-reload"]
    sshd = handlers["reload sshd"]
    assert sshd.commands == ["sshd -t", "systemctl reload ssh"]
    assert sshd.verify_hint == "a fresh login failed after the sshd reload (this change would lock you out)"
    assert sshd.verify is not None and not sshd.verify() and host.logins == [True]


def test_teardown_takes_away_what_provision_made(inv: Inventory) -> None:
    ops = vps.teardown_ops(inv.vps["main"], purge=False)
    paths = {getattr(op, "path", None) for op in ops}
    assert {D["reaper_unit_path"], "/usr/local/lib/pitunnel", D["sshd_dropin"], D["nginx_default_site"],
            D["nginx_conf"], "/etc/nginx/pitunnel"} <= paths
    assert not any(isinstance(op, PackagesAbsent) for op in ops)
    (purge,) = [op for op in vps.teardown_ops(inv.vps["main"], purge=True) if isinstance(op, PackagesAbsent)]
    assert purge.names == ("nginx", "certbot", "prometheus-node-exporter")
    (sites,) = [op for op in ops if isinstance(op, Pruned)]
    assert sites.keep == frozenset() and sites.pattern == "pitunnel-*.conf"


# ---------------------------------------------------------------------------------------------- provision


def test_provision_makes_the_account_and_nginx_first_then_reads_again(inv: Inventory,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("main")
    play = play_on(inv, {"main": host})  # type: ignore[dict-item]
    provision_vps(play)
    assert play.failed == set()
    reads = [i for i, e in enumerate(host.journal) if e == "main read"]
    applies = [i for i, e in enumerate(host.journal) if e == "main apply"]
    assert reads[0] == 0 and applies[0] == 1 and reads[1] == 2  # Nginx's own files are read once it is there
    first = host.ops[0] + host.ops[1]
    assert "useradd --system" in host.ops[0] and "apt-get install" in first
    assert not any(D["sshd_dropin"] in body for body in host.ops[:2])
    assert host.applied(D["sshd_dropin"]) and host.applied(D["reaper_unit_path"])


def test_provision_with_nginx_there_reads_once_and_leaves_a_users_default_server(
        inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    mine = f"{D['nginx_sites_dir']}/mine.conf listen 80 default_server;"
    host = FakeHost("main", [("dpkg-query", "nginx installed"), ("default(_server)?", mine)])
    provision_vps(play_on(inv, {"main": host}))  # type: ignore[dict-item]
    assert [e for e in host.journal if e == "main read"] == ["main read"]
    out = lines(capsys)
    assert (f"ok main nginx default server - yours is ({D['nginx_sites_dir']}/mine.conf): pitunnel's path-prefix "
            "server does not claim default_server, so path tunnels answer only for requests your default server "
            "does not take (use server_name tunnels)") in out
    default_site = vps.converge_ops(inv, inv.vps["main"], claim_default=False)[-1]
    assert isinstance(default_site, File) and default_site.path == D["nginx_default_site"]
    text = base64.b64encode(default_site.wanted(FileState(False)).encode()).decode()
    assert host.applied(text)  # the site written without default_server
    assert "default_server" not in default_site.wanted(FileState(False))


def test_provision_refuses_an_account_it_did_not_make_before_touching_anything(
        inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("main", [("getent passwd pitunnel || true", "pitunnel:x:1000:1000:Someone:/home/pitunnel:/bin/bash")])
    play = play_on(inv, {"main": host})  # type: ignore[dict-item]
    provision_vps(play)
    assert play.failed == {"main"} and host.ops == []  # Nginx not even installed
    assert any(l.startswith("failed main system user pitunnel - account pitunnel exists and pitunnel did not create it")
               for l in lines(capsys))


def test_provision_in_check_mode_reads_once_and_changes_nothing(inv: Inventory) -> None:
    host = FakeHost("main")
    provision_vps(play_on(inv, {"main": host}, check=True))  # type: ignore[dict-item]
    assert host.ops == [] and host.journal == ["main read"]


def test_the_default_server_note() -> None:
    assert vps_nginx.default_server_note([]) == "pitunnel's path-prefix server is the default server"
    assert vps_nginx.default_server_note(["/a", "/b"]).startswith("yours is (/a, /b): ")


def test_authorise_fails_without_raising_for_a_key_that_is_not_one(inv: Inventory) -> None:
    # a key that is not one cannot be offered: no PublicKey holds it (the Pi's base refuses it, test_roles_pi)
    with pytest.raises(BadPublicKey):
        PiOffer("alpha", PublicKey("ssh-ed25519", b"notakey"), ())
    with pytest.raises(StepFailed):
        vps.authorise(FakeHost("main", [("|| echo MISSING", "MISSING")]), inv, inv.vps["main"], [],  # type: ignore[arg-type]
                      Reporter(colour=False), Mode())


def test_teardown_of_a_provisioned_vps_says_what_it_removes_and_reloads_after(inv: Inventory,
                                                                              capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("main", [("dpkg-query -W -f='${Conffiles}", "ABSENT\n\n\nrecorded"), ("is-enabled", "enabled\nactive"),
                             ("for f in pitunnel-*.conf", "pitunnel-alpha_cam.conf\npitunnel-old_x.conf"), ("[ -e ", "yes"),
                             ("getent passwd pitunnel", ACCOUNT), ("/users", "pitunnel"), ("dpkg-query", "nginx installed"),
                             ("/packages", "nginx")])
    vps.teardown(play_on(inv, {"main": host}), purge=True)  # type: ignore[dict-item]
    in_order(lines(capsys), [
        "changed main service pitunnel-reaper.service stopped and disabled - disable, stop",
        "changed main absent /etc/systemd/system/pitunnel-reaper.service - remove",
        "changed main service pitunnel-metrics.service stopped and disabled - disable, stop",
        "changed main absent /etc/systemd/system/pitunnel-metrics.service - remove",
        "changed main absent /usr/local/lib/pitunnel - remove",
        "changed main absent /etc/ssh/sshd_config.d/10-pitunnel.conf - remove",
        "changed main user absent pitunnel - remove with its home",
        "changed main absent /etc/nginx/sites-enabled/pitunnel.conf - remove",
        "changed main no stray /etc/nginx/sites-enabled/pitunnel-*.conf - remove pitunnel-alpha_cam.conf, pitunnel-old_x.conf",
        "changed main absent /etc/nginx/conf.d/pitunnel.conf - remove",
        "changed main absent /etc/nginx/pitunnel - remove",
        "changed main Debian's default site back - link back (pitunnel set it aside)",
        "ok main certificates and ACME account removed - none of pitunnel's",
        "changed main absent /var/lib/pitunnel-acme - remove",
        "changed main folder /etc/pitunnel gone if empty - remove (empty once pitunnel's files are gone)",
        "changed main packages purged nginx certbot prometheus-node-exporter - purge nginx",
        "changed main handler reload sshd - ran once",
        "changed main handler reload nginx - ran once",
        "changed main handler daemon-reload - ran once",
        "changed main handler restart node exporter if there - ran once"])
    for command in ("systemctl disable --quiet pitunnel-reaper.service", "systemctl stop pitunnel-reaper.service",
                    "rm -f /etc/nginx/sites-enabled/pitunnel-old_x.conf", "userdel --remove pitunnel",
                    "apt-get purge -y -q --autoremove nginx", "systemctl reload-or-restart nginx"):
        assert host.applied(command), command
    assert host.logins == [True]


def test_debian_default_site_set_aside_and_put_back_for_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The two ops' commands run by sh on files under tmp_path: the link goes (recorded), and comes back on
    teardown only where pitunnel took it and nothing took its place."""
    import subprocess
    from pitunnel.facts import Facts
    from pitunnel.ops import shell
    available, enabled, state_dir = tmp_path / "available", tmp_path / "enabled", tmp_path / "state"
    available.write_text("debian's welcome\n")
    enabled.symlink_to(available)
    monkeypatch.setattr(shell, "BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setattr(vps_nginx, "DEBIAN_SITE", str(available))
    monkeypatch.setattr(vps_nginx, "STATE_DIR", str(state_dir))
    monkeypatch.setattr(vps_nginx, "SET_ASIDE_RECORD", str(state_dir / "nginx-default-site"))
    monkeypatch.setitem(D, "nginx_debian_default", str(enabled))

    def facts(output: str) -> Facts:
        return Facts({vps_nginx.DEBIAN_DEFAULT_FACT.key: (0, output)})

    def run(commands: list[str]) -> None:
        subprocess.run(["sh", "-ec", "\n".join(commands)], check=True)

    aside = vps_nginx.DebianDefaultSetAside().plan(facts(f"{available}\nsum\nsum\nnone"))
    run(aside.commands)
    assert not enabled.exists() and not enabled.is_symlink() and (state_dir / "nginx-default-site").exists()
    assert aside.backups == [str(enabled)] and aside.reason == "remove (recorded, put back on teardown)"
    back = vps_nginx.DebianDefaultRestored().plan(facts("ABSENT\n\n\nrecorded"))
    assert back.backups == [str(enabled)]
    run(back.commands)
    assert enabled.is_symlink() and enabled.resolve() == available and not state_dir.exists()
    assert vps_nginx.DebianDefaultRestored().plan(facts("ABSENT\n\n\nnone")).reason == "pitunnel did not set it aside"
    enabled.unlink()
    enabled.write_text("the user's own default site\n")  # took its place meanwhile
    state_dir.mkdir()
    (state_dir / "nginx-default-site").write_text("")
    run(vps_nginx.DebianDefaultRestored().plan(facts("FILE\n\n\nrecorded")).commands)
    assert enabled.read_text() == "the user's own default site\n" and not (state_dir / "nginx-default-site").exists()


def test_provision_of_a_fresh_vps(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("main", [("dpkg-query", "nginx installed"), ("stat -c '%F", "ABSENT")])
    provision_vps(play_on(inv, {"main": host}))  # type: ignore[dict-item]
    in_order(lines(capsys), [
        "changed main system user pitunnel - create",
        "ok main packages nginx - installed",
        "changed main directory /var/lib/pitunnel/.ssh - create",
        "changed main authorized keys of the Pis - create",
        "changed main sshd Match block for the tunnel account - create",
        "changed main stale-session reaper script - create",
        "changed main systemd unit pitunnel-reaper.service - create",
        "changed main service pitunnel-reaper.service - enable, start",
        "changed main directory /etc/nginx/pitunnel/locations - create",
        "changed main directory /etc/nginx/pitunnel/auth - create",
        "changed main basic auth for alpha/cam - create",
        "changed main nginx upstreams for the tunnels - create",
        "changed main nginx path /alpha/ -> alpha/web - create",
        "changed main nginx site cam.example.com -> alpha/cam - create",
        "ok main no stray /etc/nginx/sites-enabled/pitunnel-*.conf - none",
        "ok main no stray /etc/nginx/pitunnel/locations/*.conf - none",
        "ok main no stray /etc/nginx/pitunnel/auth/*.htpasswd - none",
        "ok main Debian's default site set aside - left as it is: not Debian's unmodified default site",
        "changed main nginx server for path-prefix tunnels - create",
        "ok main sshd password logins for root (effective config, read only) - passwords refused",
        "ok main nginx default server - pitunnel's path-prefix server is the default server",
        "changed main handler reload sshd - ran once",
        "ok main handler restart reaper - not needed: started after the change",
        "changed main handler reload nginx - ran once"])
    assert host.applied("useradd --system --user-group --create-home --home-dir /var/lib/pitunnel --shell "
                        "/usr/sbin/nologin --comment 'pitunnel reverse tunnels' pitunnel")
    assert host.applied("pitunnel_enter /var/lib/pitunnel/.ssh /var/lib/pitunnel/.ssh\nchown pitunnel:pitunnel . && chmod 700 .")
    assert host.applied("pitunnel_enter /etc/nginx/pitunnel/auth /etc/nginx/pitunnel/auth\nchown root:www-data . && chmod 750 .")
    assert mode_of(host, f"{D['tunnel_home']}/.ssh/authorized_keys") == "pitunnel:pitunnel 600"
    assert mode_of(host, D["reaper_path"]) == "root:root 755" and mode_of(host, D["sshd_dropin"]) == "root:root 644"
    assert mode_of(host, f"{D['nginx_auth_dir']}/alpha_cam.htpasswd") == "root:www-data 640"
    assert host.applied("sshd -t") and host.logins == [True]


HTPASSWD_NOW = "bob:$apr1$oLdSaLt1$Vq3ZK8pN7xYmW2bT5rQe01\n"  # on the VPS before the run
HTPASSWD_WANTED = "alice:$apr1$nEwSaLt2$Hj6Tg4Ls9PzXc1VnB8Ra02\n"  # in the laptop's basic_auth_file


def secret_forms(text: str) -> dict[str, str]:
    """The ways a file's bytes could reach a terminal: as they are, a line at a time, base64 (as the file fact
    reads it), hex; and the hash alone."""
    raw = text.encode()
    return {"plain": text.strip(), "hash": text.split("$")[-1].strip(), "base64": base64.b64encode(raw).decode(),
            "base64 of the line": base64.b64encode(raw.strip()).decode(), "hex": raw.hex(),
            "HEX": raw.hex().upper(), "hex of the hash": text.split("$")[-1].strip().encode().hex()}


@pytest.mark.parametrize("before", ["fresh", "changed", "check"])
def test_verbose_diff_run_never_shows_a_secret_files_bytes(tmp_path: Path, before: str, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A whole `provision-vps -v --diff` (through the command line's run_play, as the task runs it), on a VPS
    without the htpasswd file, with another one, and in --check: neither file's bytes reach stdout or stderr in
    any encoding, while -v does stream the facts' output (the same lines Remote.run's _drain echoes)."""
    from pitunnel import play as play_module
    from pitunnel.taskkit import Flags, run_play
    from pitunnel.ops import q

    inv = load(tmp_path, INVENTORY, {"cam.htpasswd": HTPASSWD_WANTED})
    auth = f"{D['nginx_auth_dir']}/alpha_cam.htpasswd"
    answers = [("dpkg-query", "nginx installed"), ("stat -c '%F", "ABSENT")]
    if before != "fresh":
        answers.insert(0, (f"base64 -w0 {q(auth)}", state(HTPASSWD_NOW, "root", "640").replace("root:root", "root:www-data")))
    host = FakeHost("main", answers)
    monkeypatch.setattr(play_module, "remotes_for", lambda *_, **__: {"main": host, "alpha": FakeHost("alpha"),
                                                                      "beta": FakeHost("beta")})
    run_play(provision_vps, Flags(inventory=str(inv.path), verbose=True, diff=True, check=before == "check"))
    out, err = capsys.readouterr()
    printed = out + err
    assert f"main       | @@FACT" in printed and "| root:root:600" not in printed  # -v streamed the facts' output
    for name, text in (("wanted", HTPASSWD_WANTED), ("on the VPS", HTPASSWD_NOW)):
        for form, value in secret_forms(text).items():
            assert value not in printed, f"the htpasswd {name} is printed ({form})"
    now = "absent" if before == "fresh" else f"{len(HTPASSWD_NOW)} bytes"
    assert f"(secret: {now} -> {len(HTPASSWD_WANTED)} bytes, content not shown)" in out  # the --diff
    hidden = [line for line in out.splitlines() if "(secret: " in line and "of output not shown)" in line]
    assert len(hidden) == 1, hidden  # -v, where the file fact's output was (read once)
    assert f"{'would change' if before == 'check' else 'changed':<12} main       basic auth for alpha/cam" in out


def test_provision_of_a_vps_already_as_wanted_changes_nothing_in_one_read(inv: Inventory,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from pitunnel.ops import Packages
    from tests.unit.fake_hosts import converged
    ops = [Packages(("nginx",)), *vps.converge_ops(inv, inv.vps["main"])]
    host = FakeHost("main", converged(ops, users=["pitunnel"]))
    provision_vps(play_on(inv, {"main": host}))  # type: ignore[dict-item]
    out = lines(capsys)
    assert len(host.scripts) == 1 and host.ops == [] and all(l.startswith("ok ") for l in out)
    assert not any("handler" in l for l in out)
    stray = FakeHost("main", [(f"cd {D['nginx_locations_dir']} 2>/dev/null", "alpha_web.conf\nold_gone.conf"),
                              *converged(ops, users=["pitunnel"])])
    provision_vps(play_on(inv, {"main": stray}))  # type: ignore[dict-item]
    out = lines(capsys)
    assert [l for l in out if not l.startswith("ok ")] == [
        f"changed main no stray {D['nginx_locations_dir']}/*.conf - remove old_gone.conf",
        "changed main handler reload nginx - ran once"]  # a route gone: Nginx reloads, nothing else
    assert stray.applied(f"rm -f {D['nginx_locations_dir']}/old_gone.conf")


@pytest.mark.parametrize(("servers", "ports", "found"), [
    # Debian's untouched default first: skipped, and the user's site after it still counts
    ("/etc/nginx/sites-enabled/default listen 80 default_server;\n/etc/nginx/sites-enabled/mine listen 80 default_server;",
     {80}, ["/etc/nginx/sites-enabled/mine"]),
    ("/etc/nginx/sites-enabled/mine listen [::]:8080 default_server;", {80}, []),
    ("/etc/nginx/sites-enabled/mine listen localhost default_server;", {80}, ["/etc/nginx/sites-enabled/mine"]),
    ("/etc/nginx/sites-enabled/mine listen unix:/run/n.sock default_server;", {80}, ["/etc/nginx/sites-enabled/mine"]),
    ("/etc/nginx/sites-enabled/mine listen 80 default_server;\n/etc/nginx/sites-enabled/mine listen [::]:80 default_server;",
     {80}, ["/etc/nginx/sites-enabled/mine"]),  # named once
])
def test_which_default_servers_are_the_users(servers: str, ports: set[int], found: list[str]) -> None:
    from pitunnel.facts import Facts
    facts = Facts({vps_nginx.DEBIAN_DEFAULT_FACT.key: (0, "/etc/nginx/sites-available/default\nsum\nsum\nnone"),
                   vps_nginx.DEFAULT_SERVERS_FACT.key: (0, servers)})
    assert vps_nginx.others_default_servers(facts, ports) == found


@pytest.mark.parametrize(("tls", "listen", "claims"), [
    (True, "443 ssl default_server", False),  # with TLS, a default server of the user's on 443 counts
    (False, "443 ssl default_server", True),  # without, pitunnel's server does not listen on 443
    (False, "80 default_server", False),
])
def test_pitunnel_claims_default_server_unless_the_user_has_one_on_its_ports(tmp_path: Path, tls: bool, listen: str,
                                                                             claims: bool) -> None:
    text = INVENTORY
    if not tls:  # basic auth needs TLS: without it, the route has none
        text = text.replace("main: {address: 203.0.113.1, tls_certificate: /etc/ssl/c.pem, tls_key: /etc/ssl/c.key}", "main: {address: 203.0.113.1}").replace(
            " basic_auth_file: cam.htpasswd,", "")
    inv = load(tmp_path, text, {"cam.htpasswd": "alice:$apr1$x$y\n"})
    host = FakeHost("main", [("dpkg-query", "nginx installed"), ("default(_server)?", f"/etc/nginx/conf.d/mine.conf listen {listen};")])
    provision_vps(play_on(inv, {"main": host}))  # type: ignore[dict-item]
    site = vps.converge_ops(inv, inv.vps["main"], claim_default=claims)[-1]
    assert isinstance(site, File)
    assert host.applied(base64.b64encode(site.wanted(FileState(False)).encode()).decode())
    assert ("default_server" in site.wanted(FileState(False))) is claims


@pytest.mark.parametrize(("answer", "handler"), [
    (("[ -e /etc/systemd/system/pitunnel-reaper.service ]", "yes"), "daemon-reload"),
    (("[ -e /etc/ssh/sshd_config.d/10-pitunnel.conf ]", "yes"), "reload sshd"),
    (("[ -e /etc/nginx/sites-enabled/pitunnel.conf ]", "yes"), "reload nginx"),
    (("[ -e /etc/nginx/conf.d/pitunnel.conf ]", "yes"), "reload nginx"),
    (("[ -e /etc/nginx/pitunnel ]", "yes"), "reload nginx"),
    (("cd /etc/nginx/sites-enabled 2>/dev/null", "pitunnel-old_x.conf"), "reload nginx"),
])
def test_vps_teardown_reloads_what_each_removed_file_fed(inv: Inventory, answer: tuple[str, str], handler: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("main", [answer])
    vps.teardown(play_on(inv, {"main": host}), purge=False)  # type: ignore[dict-item]
    assert [l for l in lines(capsys) if " handler " in l] == [f"changed main handler {handler} - ran once"]


@pytest.mark.parametrize(("changed", "handler"), [
    ("reaper", "restart reaper"), ("reaper_unit", "restart reaper"), ("stray_site", "reload nginx"),
    ("stray_auth", "reload nginx"),
])
def test_provision_restarts_or_reloads_only_what_a_change_feeds(inv: Inventory, changed: str, handler: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from pitunnel.ops import Packages
    from tests.unit.fake_hosts import converged
    ops = [Packages(("nginx",)), *vps.converge_ops(inv, inv.vps["main"])]
    first = {"reaper": (f"base64 -w0 {D['reaper_path']}", "root:root:755\nb2xk"),
             "reaper_unit": (f"base64 -w0 {D['reaper_unit_path']}", "root:root:644\nb2xk"),
             "stray_site": (f"cd {D['nginx_sites_dir']} 2>/dev/null", "pitunnel-alpha_cam.conf\npitunnel-gone_x.conf"),
             "stray_auth": (f"cd {D['nginx_auth_dir']} 2>/dev/null", "alpha_cam.htpasswd\ngone_x.htpasswd")}[changed]
    host = FakeHost("main", [first, *converged(ops, users=["pitunnel"])])
    provision_vps(play_on(inv, {"main": host}))  # type: ignore[dict-item]
    assert [l for l in lines(capsys) if " handler " in l] == [f"changed main handler {handler} - ran once"]


def test_a_shared_key_refusal_names_the_key_the_other_pis_and_the_fix(key: str) -> None:
    """The line a Pi refused a key gets: whose it is (or that the VPS cannot tell), and how to fix it."""
    fingerprint = parse_public_key(key).fingerprint
    kept = vps_authorized.SharedKey(key, ("alpha", "beta", "gamma"), "alpha")
    assert kept.refused == ("beta", "gamma")
    assert kept.why("beta", "main") == (
        f"refused: its tunnel key {fingerprint} is alpha's (authorised for alpha on main first); nothing written for "
        "beta, alpha keeps its key. Fix: look into beta, whose tunnel key's .pub is not its own key (remove that .pub "
        "there and rerun: it is derived again from the Pi's own private key)")
    unknown = vps_authorized.SharedKey(key, ("alpha", "beta", "gamma"), None)
    assert unknown.refused == ("alpha", "beta", "gamma")
    assert unknown.why("beta", "main") == (
        f"refused: its tunnel key {fingerprint} is offered for alpha, gamma too, and main cannot tell whose it is; "
        "written for neither. Fix: find the Pi whose tunnel key's .pub is not its own key (remove that .pub there "
        "and rerun: it is derived again from the Pi's own private key); the other then gets its key")
    # a line sshd keeps but pitunnel cannot parse is shown by the first 20 characters of its last word
    odd = vps_authorized.SharedKey("ssh-ed25519 AAAAnot-a-key-at-all-really", ("alpha", "beta"), "alpha")
    assert "its tunnel key AAAAnot-a-key-at-all... is alpha's" in odd.why("beta", "main")
