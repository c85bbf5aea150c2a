"""Unit tests for the config text the roles render (sshd Match block, nginx, the Pi's ssh_config and
systemd unit, authorized_keys), from an inventory loaded the real way. Pure: tmp_path only."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from pitunnel.facts import Facts, FileState
from pitunnel.inventory import NAME_RE, Inventory, load_inventory
from pitunnel.ops import Absent, File, KeyPair, Op, Service
from pitunnel.roles.pi import locations as pi_locations
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.pi import sshd as pi_sshd
from pitunnel.roles.pi import steps as pi_steps
from pitunnel.roles.vps import authorized as vps_authorized
from pitunnel.roles.vps import nginx as vps_nginx
from pitunnel.roles.vps import role as vps_role
from pitunnel.roles.vps import steps as vps_steps

VPS_DEFAULTS = vps_role.VPS_DEFAULTS
PI_DEFAULTS = pi_role.PI_DEFAULTS
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHva6ee4ekTAawH0SqI5CoAvuEvPaN4hfyg5Q+vEb9p1"

INVENTORY = """
settings:
  known_hosts: known_hosts
  laptop_key: keys/laptop
vps:
  main:
    address: 203.0.113.10
    port: 2222
    key: keys/admin
    tls_certificate: /etc/ssl/main.pem
    tls_key: /etc/ssl/main.key
  other:
    address: vps2.example.com
    http_port: 8080
    https_port: 8443
    tls_certificate: /etc/ssl/vps2.pem
    tls_key: /etc/ssl/vps2.key
    client_alive_interval: 7
    client_alive_count_max: 4
pis:
  pi1:
    address: 192.168.1.50
    vps: main
    server_alive_interval: 11
    server_alive_count_max: 5
    tunnels:
      ssh: {type: ssh, remote_port: 20022, public: true}
      web: {type: http, local_port: 8080, remote_port: 20080, basic_auth_file: web.htpasswd}
      cam: {type: http, server_name: cam.example.com, remote_port: 20081, websocket: true,
            client_max_body_size: 50m}
  pi2:
    address: 192.168.1.51
    vps: main
    user: pi
    tunnel_user: pi
    tunnels:
      ssh: {type: ssh, remote_port: 20023}
  pi3:
    address: 10.0.0.3
    vps: other
    tunnels:
      ssh: {type: ssh, local_port: 2200, remote_port: 20022}
      site: {type: http, server_name: "*.example.org", path: /app/, remote_port: 20090}
"""


def keygen(path: Path, comment: str = "test") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)], check=True)
    return path.with_name(path.name + ".pub").read_text().strip()


@pytest.fixture(scope="module")
def inv(tmp_path_factory: pytest.TempPathFactory) -> Inventory:
    base = tmp_path_factory.mktemp("inventory")
    keygen(base / "keys" / "laptop", "me@laptop")
    keygen(base / "keys" / "admin")
    (base / "web.htpasswd").write_text("alice:$apr1$abc$def\n")
    file = base / "hosts.yml"
    file.write_text(textwrap.dedent(INVENTORY).lstrip())
    return load_inventory(file)


def file_op(ops: list[Op], path: str) -> File:
    found = [op for op in ops if isinstance(op, File) and op.path == path]
    assert len(found) == 1, f"no single File op for {path}: {[getattr(o, 'path', o) for o in ops]}"
    return found[0]


def text_of(ops: list[Op], path: str) -> str:
    return file_op(ops, path).wanted(FileState(exists=False))


def directives(text: str) -> list[str]:
    """The non-comment lines, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def values(text: str, keyword: str) -> list[str]:
    return [line.split(None, 1)[1] if " " in line else "" for line in directives(text)
            if line.split()[0] == keyword]


# ---------------------------------------------------------------------------
# VPS: sshd Match block


def sshd_text(inv: Inventory, vps: str) -> str:
    return text_of(vps_steps.converge_ops(inv, inv.vps[vps]), VPS_DEFAULTS["sshd_dropin"])


def test_sshd_match_block_restricts_the_tunnel_account(inv: Inventory) -> None:
    text = sshd_text(inv, "main")
    lines = directives(text)
    assert lines[0] == "Match User pitunnel"
    # nothing before the Match line: no global setting changes for other users
    assert not [l for l in text.split("Match User", 1)[0].splitlines() if l.strip() and not l.startswith("#")]
    for wanted in ("PermitOpen none", "AllowTcpForwarding remote", "GatewayPorts clientspecified",
                   "AuthenticationMethods publickey", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                   "PermitTTY no", "X11Forwarding no", "AllowAgentForwarding no", "AllowStreamLocalForwarding no",
                   "PermitTunnel no", "ForceCommand /bin/false", "ClientAliveInterval 5", "ClientAliveCountMax 2"):
        assert wanted in lines, wanted
    assert len(values(text, "PermitListen")) == 1


def test_sshd_permit_listen_is_any_port_on_the_addresses_this_vps_tunnels_use(inv: Inventory) -> None:
    """A line of constant length (each key's permitlisten says which port is whose): sshd reads the list again
    into every session at a cost that grows with its square (docs/performance.md)."""
    main = values(sshd_text(inv, "main"), "PermitListen")[0].split()
    assert main == ['"127.0.0.1:*"', '"0.0.0.0:*"']  # a public tunnel (20022) and loopback ones
    other_text = sshd_text(inv, "other")
    assert values(other_text, "PermitListen")[0].split() == ['"127.0.0.1:*"']  # loopback only: nobody binds publicly
    assert "ClientAliveInterval 7" in directives(other_text)
    assert "ClientAliveCountMax 4" in directives(other_text)


def test_sshd_permit_listen_none_without_tunnels(tmp_path: Path) -> None:
    file = tmp_path / "hosts.yml"
    file.write_text("settings: {laptop_key: null, known_hosts: kh}\nvps:\n  main:\n    address: 203.0.113.1\n"
                    "    tunnel_user: tunnels\n")
    inv = load_inventory(file)
    text = sshd_text(inv, "main")
    assert values(text, "PermitListen") == ["none"]
    assert directives(text)[0] == "Match User tunnels"


def test_sshd_dropin_is_validated_and_reloads(inv: Inventory) -> None:
    op = file_op(vps_steps.converge_ops(inv, inv.vps["main"]), VPS_DEFAULTS["sshd_dropin"])
    assert op.validate == "sshd -t"
    assert op.notify == ("reload sshd",)
    assert (op.owner, op.group, op.mode) == ("root", "root", 0o644)


# ---------------------------------------------------------------------------
# VPS: authorized_keys


def options_of(line: str) -> list[str]:
    """The option list at the start of an authorized_keys line (no option here has a space)."""
    return line.split()[0].split(",")


def test_authorized_line(inv: Inventory) -> None:
    pub = "ssh-ed25519 AAAAkey1 pitunnel:pi1"
    line = vps_authorized.authorized_line(inv.vps["main"], inv.pis["pi1"].first_path, pub)
    opts = options_of(line)
    assert opts[0] == "restrict"
    assert "port-forwarding" in opts
    assert sorted(o for o in opts if o.startswith("permitlisten=")) == sorted([
        'permitlisten="0.0.0.0:20022"', 'permitlisten="127.0.0.1:20080"', 'permitlisten="127.0.0.1:20081"'])
    assert 'command="/bin/false"' in opts
    assert "" not in opts  # no empty option (",,")
    assert "permitopen" not in line and "pty" not in opts and "agent-forwarding" not in opts
    assert line.split()[1:] == ["ssh-ed25519", "AAAAkey1", "pitunnel:pi1"]


def test_authorized_line_only_that_pis_tunnels(inv: Inventory) -> None:
    line = vps_authorized.authorized_line(inv.vps["main"], inv.pis["pi2"].first_path, "ssh-ed25519 AAAAkey2")
    assert [o for o in options_of(line) if o.startswith("permitlisten=")] == ['permitlisten="127.0.0.1:20023"']
    assert line.endswith(" ssh-ed25519 AAAAkey2 pitunnel:pi2")


def test_authorized_line_pi_without_tunnels_gets_no_forwarding(tmp_path: Path) -> None:
    file = tmp_path / "hosts.yml"
    file.write_text(textwrap.dedent("""
        settings: {laptop_key: null, known_hosts: kh}
        vps: {main: {address: 203.0.113.1}}
        pis:
          idle: {address: 10.0.0.1}
          busy: {address: 10.0.0.2, tunnels: {ssh: {type: ssh, remote_port: 20001}}}
        """))
    inv = load_inventory(file)
    line = vps_authorized.authorized_line(inv.vps["main"], inv.pis["idle"].first_path, "ssh-ed25519 AAAAidle")
    opts = options_of(line)
    assert "" not in opts
    assert "port-forwarding" not in opts or any(o.startswith("permitlisten=") for o in opts)


def keys_file(inv: Inventory, vps: str, existing: str | None, new: dict[str, str],
              drop: frozenset[str] = frozenset()) -> tuple[File, str]:
    op = vps_authorized.authorized_keys(inv, inv.vps[vps], new, drop)
    state = FileState(False) if existing is None else FileState(True, "pitunnel", "pitunnel", 0o600,
                                                                existing.encode())
    return op, op.wanted(state)


def test_authorized_keys_file_op(inv: Inventory) -> None:
    op, text = keys_file(inv, "main", None, {})
    assert op.path == f"{VPS_DEFAULTS['tunnel_home']}/.ssh/authorized_keys"
    assert (op.owner, op.group, op.mode) == ("pitunnel", "pitunnel", 0o600)
    assert text == ""  # no keys known yet: nothing authorised


def test_authorized_keys_keeps_other_pis_and_updates_options(inv: Inventory) -> None:
    existing = ("restrict,port-forwarding,permitlisten=\"127.0.0.1:1\",command=\"/bin/false\" "
                "ssh-ed25519 AAAAold1 pitunnel:pi1\n"
                "restrict,port-forwarding,permitlisten=\"127.0.0.1:9999\",command=\"/bin/false\" "
                "ssh-ed25519 AAAAkey2 pitunnel:pi2\n"
                "restrict,port-forwarding,permitlisten=\"127.0.0.1:20050\",command=\"/bin/false\" "
                "ssh-ed25519 AAAAgone pitunnel:gone\n")
    main, pi1, pi2 = inv.vps["main"], inv.pis["pi1"], inv.pis["pi2"]
    op, text = keys_file(inv, "main", existing, {"pi1": "ssh-ed25519 AAAAnew1 pitunnel:pi1"})
    assert text == (vps_authorized.authorized_line(main, pi1.first_path, "ssh-ed25519 AAAAnew1") + "\n"
                    + vps_authorized.authorized_line(main, pi2.first_path, "ssh-ed25519 AAAAkey2") + "\n")
    assert "AAAAold1" not in text  # the new key replaced the old one
    assert "127.0.0.1:9999" not in text and 'permitlisten="127.0.0.1:20023"' in text  # options from the inventory
    assert "pitunnel:gone" not in text and "AAAAgone" not in text  # no longer in the inventory
    # idempotent: its own output in, the same out, and the File op plans nothing
    _, again = keys_file(inv, "main", text, {})
    assert again == text
    _, again_with_same_new = keys_file(inv, "main", text, {"pi1": "ssh-ed25519 AAAAnew1 pitunnel:pi1"})
    assert again_with_same_new == text


def test_authorized_keys_only_this_vps_pis(inv: Inventory) -> None:
    existing = "ssh-ed25519 AAAAkey3 pitunnel:pi3\nssh-ed25519 AAAAkey1 pitunnel:pi1\n"
    _, main_text = keys_file(inv, "main", existing, {})
    assert "pitunnel:pi3" not in main_text and "pitunnel:pi1" in main_text
    _, other_text = keys_file(inv, "other", existing, {"pi1": "ssh-ed25519 AAAAx"})
    assert other_text == vps_authorized.authorized_line(inv.vps["other"], inv.pis["pi3"].first_path, "ssh-ed25519 AAAAkey3") + "\n"


def test_authorized_keys_drop(inv: Inventory) -> None:
    existing = "ssh-ed25519 AAAAkey1 pitunnel:pi1\nssh-ed25519 AAAAkey2 pitunnel:pi2\n"
    _, text = keys_file(inv, "main", existing, {}, drop=frozenset({"pi2"}))
    assert "pitunnel:pi1" in text and "pitunnel:pi2" not in text and "AAAAkey2" not in text
    _, everything = keys_file(inv, "main", existing, {}, drop=frozenset({"pi1", "pi2"}))
    assert everything == ""


# ---------------------------------------------------------------------------
# VPS: nginx


def test_nginx_location_for_path_tunnel(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    text = text_of(ops, f"{VPS_DEFAULTS['nginx_locations_dir']}/pi1_web.conf")
    lines = directives(text)
    assert lines[0] == "location /pi1/web/ {"
    assert lines[-1] == "}"
    assert "proxy_pass http://pitunnel_pi1_web/;" in lines  # trailing slash: the prefix is stripped
    assert "proxy_http_version 1.1;" in lines
    for header in ("Host $host", "X-Real-IP $remote_addr", "X-Forwarded-For $remote_addr",
                   "X-Forwarded-Proto $scheme", 'Connection ""'):
        assert f"proxy_set_header {header};" in lines, header
    # a plain route: no upgrade passed, keep-alive to the tunnel, short timeouts, the default body limit
    assert not any("Upgrade" in l or "$pitunnel_connection" in l for l in lines)
    assert "proxy_read_timeout 60s;" in lines and "proxy_send_timeout 60s;" in lines
    assert "client_max_body_size 10m;" in lines
    assert 'auth_basic "pi1";' in lines
    assert f"auth_basic_user_file {VPS_DEFAULTS['nginx_auth_dir']}/pi1_web.htpasswd;" in lines
    assert text.count("{") == text.count("}")


def test_nginx_basic_auth_file_is_secret_and_readable_by_nginx(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    op = file_op(ops, f"{VPS_DEFAULTS['nginx_auth_dir']}/pi1_web.htpasswd")
    assert op.secret and op.mode == 0o640 and op.group == "www-data"
    assert op.wanted(FileState(False)) == "alice:$apr1$abc$def\n"
    assert "reload nginx" in op.notify


def test_nginx_server_for_server_name_tunnel(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    text = text_of(ops, f"{VPS_DEFAULTS['nginx_sites_dir']}/pitunnel-pi1_cam.conf")
    lines = directives(text)
    assert lines[0] == "server {"
    assert "server_name cam.example.com;" in lines
    assert "listen 80;" in lines and "listen [::]:80;" in lines
    assert not any("default_server" in l for l in lines)
    # a certificate (main's hand-given one): port 80 only redirects, the route answers on 443
    redirect, served = text.split("\nserver {", 2)[1:]
    assert "return 308 https://$host$request_uri;" in directives(redirect) and "proxy_pass" not in redirect
    assert "listen 443 ssl;" in directives(served) and "listen 80;" not in directives(served)
    assert "ssl_certificate /etc/ssl/main.pem;" in lines and "ssl_protocols TLSv1.2 TLSv1.3;" in lines
    assert "location / {" in lines
    assert "proxy_pass http://pitunnel_pi1_cam;" in lines  # no path: URI passed unchanged
    for header in ("X-Forwarded-For $remote_addr", "X-Real-IP $remote_addr", "X-Forwarded-Proto $scheme",
                   "Upgrade $http_upgrade", "Connection $pitunnel_connection"):
        assert f"proxy_set_header {header};" in lines, header
    # websocket: true: the upgrade is passed and an idle socket lives an hour; its own body limit
    assert "proxy_read_timeout 1h;" in lines and "proxy_send_timeout 1h;" in lines
    assert 'proxy_set_header Connection "";' not in lines
    assert "client_max_body_size 50m;" in lines
    assert "server_tokens off;" in lines
    assert not any(l.startswith("auth_basic") for l in lines)
    assert text.count("{") == text.count("}")


def test_nginx_server_with_tls_and_path(inv: Inventory) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["other"])
    text = text_of(ops, f"{VPS_DEFAULTS['nginx_sites_dir']}/pitunnel-pi3_site.conf")
    lines = directives(text)
    assert "server_name *.example.org;" in lines
    assert "listen 8080;" in lines and "listen 8443 ssl;" in lines and "listen [::]:8443 ssl;" in lines
    assert "ssl_certificate /etc/ssl/vps2.pem;" in lines and "ssl_certificate_key /etc/ssl/vps2.key;" in lines
    assert "location /app/ {" in lines
    assert "proxy_pass http://pitunnel_pi3_site/;" in lines


def test_nginx_upstreams(inv: Inventory) -> None:
    text = text_of(vps_steps.converge_ops(inv, inv.vps["main"]), VPS_DEFAULTS["nginx_conf"])
    lines = directives(text)
    assert "map $http_upgrade $pitunnel_connection {" in lines
    assert "default upgrade;" in lines and "''      '';" in lines
    assert "upstream pitunnel_pi1_web {" in lines and "server 127.0.0.1:20080;" in lines
    assert "upstream pitunnel_pi1_cam {" in lines and "server 127.0.0.1:20081;" in lines
    assert len([l for l in lines if l.startswith("upstream ")]) == 2  # ssh tunnels get none
    assert "keepalive 16;" in lines
    assert text.count("{") == text.count("}")


def test_nginx_default_site(inv: Inventory) -> None:
    main = directives(text_of(vps_steps.converge_ops(inv, inv.vps["main"]), VPS_DEFAULTS["nginx_default_site"]))
    assert "listen 80 default_server;" in main and "listen [::]:80 default_server;" in main
    assert f"include {VPS_DEFAULTS['nginx_locations_dir']}/*.conf;" in main
    assert "server_name _;" in main
    assert "server_tokens off;" in main
    other = directives(text_of(vps_steps.converge_ops(inv, inv.vps["other"]), VPS_DEFAULTS["nginx_default_site"]))
    assert "listen 8443 ssl default_server;" in other and "listen 8080 default_server;" in other


def test_nginx_prune_keeps_exactly_the_current_files(inv: Inventory) -> None:
    from pitunnel.ops import Pruned
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    pruned = {op.directory + "/" + op.pattern: op.keep for op in ops if isinstance(op, Pruned)}
    assert pruned[f"{VPS_DEFAULTS['nginx_sites_dir']}/pitunnel-*.conf"] == frozenset({"pitunnel-pi1_cam.conf"})
    assert pruned[f"{VPS_DEFAULTS['nginx_locations_dir']}/*.conf"] == frozenset({"pi1_web.conf"})
    assert pruned[f"{VPS_DEFAULTS['nginx_auth_dir']}/*.htpasswd"] == frozenset({"pi1_web.htpasswd"})


COLLIDING = """
settings: {laptop_key: null, known_hosts: kh}
vps: {main: {address: 203.0.113.1, tls_certificate: /c.pem, tls_key: /k.pem}}
pis:
  a-b:
    address: 10.0.0.1
    tunnels: {c: {type: http, remote_port: 20001, basic_auth_file: pw}}
  a:
    address: 10.0.0.2
    tunnels: {b-c: {type: http, remote_port: 20002, basic_auth_file: pw},
              www: {type: http, server_name: a.example.com, remote_port: 20003}}
  a-www:
    address: 10.0.0.3
    tunnels: {x: {type: http, server_name: x.example.com, remote_port: 20004}}
"""


def test_nginx_names_of_colliding_pairs_differ(tmp_path: Path) -> None:
    """Pi `a-b` tunnel `c` and Pi `a` tunnel `b-c` were both `pitunnel_a_b_c` and `a-b-c.conf`."""
    (tmp_path / "pw").write_text("alice:x\n")
    (tmp_path / "hosts.yml").write_text(COLLIDING)
    inv = load_inventory(tmp_path / "hosts.yml")
    routes = {(r.pi, r.name): r for r in vps_nginx.http_routes(inv, inv.vps["main"])}
    one, two = routes[("a-b", "c")], routes[("a", "b-c")]
    assert one.upstream != two.upstream and one.file_stem != two.file_stem
    assert one.auth_file != two.auth_file
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    upstreams = values(text_of(ops, VPS_DEFAULTS["nginx_conf"]), "upstream")
    assert len(upstreams) == len(set(upstreams)) == 4
    files = [op.path for op in ops if isinstance(op, File) and op.path.startswith("/etc/nginx/")
             and op.path not in (VPS_DEFAULTS["nginx_conf"], VPS_DEFAULTS["nginx_default_site"])]
    assert len(files) == len(set(files)) == 6  # 2 locations, 2 sites, 2 htpasswd
    # each location file sends its path to its own upstream
    for r in (one, two):
        lines = directives(text_of(ops, f"{VPS_DEFAULTS['nginx_locations_dir']}/{r.file_stem}.conf"))
        assert f"location /{r.pi}/{r.name}/ {{" in lines and f"proxy_pass http://{r.upstream}/;" in lines
    # and the prune ops keep every one of them
    from pitunnel.ops import Pruned
    kept = {name for op in ops if isinstance(op, Pruned) for name in op.keep}
    assert {p.rsplit("/", 1)[1] for p in files} == kept


def small_names(length: int) -> list[str]:
    """Every valid name up to `length` characters over a, b and '-' (and '_' never occurs)."""
    names = ["a", "b"]
    frontier = list(names)
    for _ in range(length - 1):
        frontier = [n + c for n in frontier for c in "ab-"]
        names += frontier
    assert all(NAME_RE.fullmatch(n) for n in names)
    return names


def test_route_names_are_injective_exhaustively() -> None:
    names = small_names(4)  # 80 names, 6400 (Pi, tunnel) pairs, every way a '-' can fall
    stems: dict[str, tuple[str, str]] = {}
    for pi in names:
        for tunnel in names:
            stem = vps_nginx.route_stem(pi, tunnel)
            assert stems.setdefault(stem, (pi, tunnel)) == (pi, tunnel), (stem, stems[stem], (pi, tunnel))
            assert tuple(stem.split("_")) == (pi, tunnel)  # reads back
            assert re.fullmatch(r"[a-z0-9_-]+", stem)  # safe in file and upstream names
    assert len(stems) == len(names) ** 2


@pytest.mark.parametrize("value, ok", [("10m", "10m"), ("512k", "512k"), ("1G", "1G"), (0, "0"), (1024, "1024"),
                                       ("10 m", None), ("10mb", None), ("-1", None), (True, None), ("", None)])
def test_client_max_body_size_is_checked(tmp_path: Path, value: object, ok: str | None) -> None:
    import json

    from pitunnel.inventory import InventoryError
    (tmp_path / "hosts.yml").write_text(
        "settings: {laptop_key: null, known_hosts: kh}\nvps: {main: {address: 203.0.113.1}}\n"
        f"pis:\n  pi1:\n    address: 10.0.0.1\n    tunnels:\n      web: {{type: http, client_max_body_size: "
        f"{json.dumps(value)}}}\n")
    if ok is None:
        with pytest.raises(InventoryError, match=r"hosts.yml:7:\d+: pis.pi1.tunnels.web.client_max_body_size: .* "
                                                 r"Fix: (write a number of bytes|give a value)"):
            load_inventory(tmp_path / "hosts.yml")
    else:
        (tunnel,) = load_inventory(tmp_path / "hosts.yml").pis["pi1"].tunnels
        assert tunnel.client_max_body_size == ok and tunnel.websocket is False


@pytest.mark.parametrize("key", ["websocket: true", "client_max_body_size: 1m"])
def test_http_route_keys_refused_on_ssh_tunnels(tmp_path: Path, key: str) -> None:
    from pitunnel.inventory import InventoryError
    (tmp_path / "hosts.yml").write_text(
        "settings: {laptop_key: null, known_hosts: kh}\nvps: {main: {address: 203.0.113.1}}\n"
        f"pis:\n  pi1:\n    address: 10.0.0.1\n    tunnels:\n      ssh: {{type: ssh, {key}}}\n")
    with pytest.raises(InventoryError, match=f"'{key.split(':')[0]}' only applies to http tunnels"):
        load_inventory(tmp_path / "hosts.yml")


@pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed here (nginx -t checks skipped)")
def test_nginx_t_accepts_the_config(inv: Inventory, tmp_path: Path) -> None:
    ops = vps_steps.converge_ops(inv, inv.vps["main"])
    conf = tmp_path / "nginx.conf"
    locations = tmp_path / "locations"
    locations.mkdir()
    (locations / "pi1_web.conf").write_text(
        text_of(ops, f"{VPS_DEFAULTS['nginx_locations_dir']}/pi1_web.conf")
        .replace(VPS_DEFAULTS["nginx_auth_dir"], str(tmp_path)))
    (tmp_path / "pi1_web.htpasswd").write_text("alice:x\n")
    http = text_of(ops, VPS_DEFAULTS["nginx_conf"])
    site = text_of(ops, VPS_DEFAULTS["nginx_default_site"]).replace(VPS_DEFAULTS["nginx_locations_dir"], str(locations))
    server = text_of(ops, f"{VPS_DEFAULTS['nginx_sites_dir']}/pitunnel-pi1_cam.conf")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-subj", "/CN=x", "-keyout", str(tmp_path / "k.pem"), "-out", str(tmp_path / "c.pem")],
                   check=True, capture_output=True)
    text = f"{http}\n{site}\n{server}".replace("/etc/ssl/main.pem", str(tmp_path / "c.pem")).replace(
        "/etc/ssl/main.key", str(tmp_path / "k.pem"))  # the inventory's tls_certificate and tls_key, made here
    conf.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
                    f"http {{\naccess_log off;\n{text}\n}}\n")
    result = subprocess.run(["nginx", "-t", "-c", str(conf), "-p", str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------
# Pi: ssh_config, unit, known_hosts, laptop key


def pi_ops(inv: Inventory, pi: str, host_keys: list[str] | None = None) -> list[Op]:
    spec = inv.pis[pi]
    return pi_steps.tunnel_ops(inv, spec, inv.vps_of(spec.first_path), host_keys or [HOST_KEY])


def unit_text(inv: Inventory, pi: str) -> str:
    return text_of(pi_ops(inv, pi), PI_DEFAULTS["unit_path"])


def path_file(inv: Inventory, pi: str, name: str, host_keys: list[str] | None = None) -> str:
    """A file of the Pi's path through its (first) VPS: ssh_config or known_hosts in that VPS's folder."""
    spec = inv.pis[pi]
    return text_of(pi_ops(inv, pi, host_keys), f"{pi_locations.vps_config_dir(spec.first_vps)}/{name}")


def remote_forwards(text: str) -> list[str]:
    return [":".join(l.split()[1:]) for l in directives(text) if l.split()[0] == "RemoteForward"]


def exec_start(text: str) -> list[str]:
    starts = [l for l in directives(text) if l.startswith("ExecStart=")]
    assert len(starts) == 1
    return starts[0].removeprefix("ExecStart=").split()


def test_unit_runs_autossh_with_every_forward(inv: Inventory) -> None:
    text = unit_text(inv, "pi1")
    argv = exec_start(text)
    assert argv[0] == "/usr/bin/autossh"
    assert argv[1:3] == ["-M", "0"]
    assert "-N" in argv
    # a template: each instance reads its own VPS's ssh_config, which holds that VPS's forwards
    assert PI_DEFAULTS["unit"] == "pitunnel@.service" and pi_locations.unit("main") == "pitunnel@main.service"
    assert argv[argv.index("-F") + 1] == f"{PI_DEFAULTS['config_dir']}/%i/ssh_config"
    assert "-R" not in argv
    assert argv[-1] == PI_DEFAULTS["ssh_host_alias"]
    assert remote_forwards(path_file(inv, "pi1", "ssh_config")) == [
        "0.0.0.0:20022:127.0.0.1:22", "127.0.0.1:20080:127.0.0.1:8080", "127.0.0.1:20081:127.0.0.1:80"]


def test_unit_forwards_only_that_pi(inv: Inventory) -> None:
    assert remote_forwards(path_file(inv, "pi3", "ssh_config")) == ["127.0.0.1:20022:127.0.0.1:2200",
                                                                    "127.0.0.1:20090:127.0.0.1:80"]


def test_unit_restarts_forever(inv: Inventory) -> None:
    lines = directives(unit_text(inv, "pi1"))
    for wanted in ("Environment=AUTOSSH_GATETIME=0", "Restart=always", "StartLimitIntervalSec=0",
                   "After=network-online.target", "Wants=network-online.target", "User=pitunnel",
                   "WantedBy=multi-user.target", f"RestartSec={PI_DEFAULTS['restart_sec']}", "NoNewPrivileges=yes",
                   "SuccessExitStatus=1"):  # autossh's exit when stopped: a stopped tunnel is not "failed"
        assert wanted in lines, wanted
    # StartLimitIntervalSec is a [Unit] setting (since systemd 230)
    unit_section = unit_text(inv, "pi1").split("[Service]")[0]
    assert "StartLimitIntervalSec=0" in unit_section


def test_unit_protect_home_follows_the_key_location(inv: Inventory) -> None:
    dedicated = directives(unit_text(inv, "pi1"))
    assert "ProtectHome=yes" in dedicated  # key under /var/lib/pitunnel
    login_user = directives(unit_text(inv, "pi2"))
    assert "User=pi" in login_user
    assert "ProtectHome=read-only" in login_user  # key under /home/pi must stay readable
    assert pi_locations.key_path(inv.pis["pi2"]) == f"/home/pi/.ssh/{PI_DEFAULTS['key_name']}"
    assert pi_locations.key_path(inv.pis["pi1"]) == f"{PI_DEFAULTS['tunnel_home']}/.ssh/{PI_DEFAULTS['key_name']}"


def ssh_config(inv: Inventory, pi: str) -> str:
    return path_file(inv, pi, "ssh_config")


def test_ssh_config_one_host_entry_with_safe_options(inv: Inventory) -> None:
    text = ssh_config(inv, "pi1")
    lines = directives(text)
    hosts = [l for l in lines if l.split()[0].lower() == "host"]
    assert hosts == [f"Host {PI_DEFAULTS['ssh_host_alias']}"]
    assert not re.search(r"(?im)^\s*Host\s+\*", text)
    assert not re.search(r"(?im)^\s*Match\b", text)
    for wanted in ("ExitOnForwardFailure yes", "BatchMode yes", "StrictHostKeyChecking yes", "IdentitiesOnly yes",
                   "HostName 203.0.113.10", "Port 2222", "User pitunnel", "ServerAliveInterval 11",
                   "ServerAliveCountMax 5", f"IdentityFile {pi_locations.key_path(inv.pis['pi1'])}",
                   f"UserKnownHostsFile {PI_DEFAULTS['config_dir']}/main/known_hosts", "GlobalKnownHostsFile /dev/null",
                   "UpdateHostKeys no", "ForwardAgent no"):
        assert wanted in lines, wanted
    # every option belongs to the Host entry (indented under it)
    body = text.split(hosts[0], 1)[1]
    assert all(l.startswith("    ") for l in body.splitlines() if l.strip())


def test_ssh_config_defaults_and_other_vps(inv: Inventory) -> None:
    lines = directives(ssh_config(inv, "pi3"))
    assert "HostName vps2.example.com" in lines and "Port 22" in lines
    assert "ServerAliveInterval 10" in lines and "ServerAliveCountMax 2" in lines


def test_ssh_config_prefers_chacha20_and_keeps_compression_off(inv: Inventory) -> None:
    for pi in ("pi1", "pi3"):
        text = ssh_config(inv, pi)
        ciphers = values(text, "Ciphers")
        assert len(ciphers) == 1
        offered = ciphers[0].split(",")
        assert offered[0] == "chacha20-poly1305@openssh.com"  # fast without AES instructions (Pi 3/4)
        assert "aes128-gcm@openssh.com" in offered  # a fallback for a VPS without chacha20
        assert not [c for c in offered if "cbc" in c or c in ("3des", "arcfour")]
        assert values(text, "Compression") == ["no"]
        assert f"    Ciphers {ciphers[0]}" in text.splitlines()  # under the Host entry


def test_known_hosts_pins_the_vps_keys(inv: Inventory) -> None:
    keys = [HOST_KEY, "ecdsa-sha2-nistp256 AAAAE2VjZHNh"]
    main = path_file(inv, "pi1", "known_hosts", keys)
    assert main == f"[203.0.113.10]:2222 {keys[0]}\n[203.0.113.10]:2222 {keys[1]}\n"
    other = path_file(inv, "pi3", "known_hosts", keys[:1])
    assert other == f"vps2.example.com {HOST_KEY}\n"


def test_tunnel_files_restart_the_tunnel_and_service_is_wanted(inv: Inventory) -> None:
    ops = pi_ops(inv, "pi1")
    folder = pi_locations.vps_config_dir("main")
    for path in (f"{folder}/known_hosts", f"{folder}/ssh_config", PI_DEFAULTS["unit_path"]):
        assert file_op(ops, path).notify == ("restart tunnel main",)
    services = {op.unit: op for op in ops if isinstance(op, Service)}
    assert set(services) == {"pitunnel@main.service", "pitunnel-watchdog@main.service", PI_DEFAULTS["watchdog_timer"],
                             PI_DEFAULTS["legacy_unit"], PI_DEFAULTS["legacy_watchdog_unit"]}
    for wanted in ("pitunnel@main.service", "pitunnel-watchdog@main.service"):
        assert services[wanted].enabled and services[wanted].running
    # the timer of earlier versions, and the single-VPS units before templates, are retired and their files removed
    for old in (PI_DEFAULTS["watchdog_timer"], PI_DEFAULTS["legacy_unit"], PI_DEFAULTS["legacy_watchdog_unit"]):
        assert not services[old].enabled and not services[old].running
        assert any(isinstance(op, Absent) and op.path == f"/etc/systemd/system/{old}" for op in ops)
    absent = {op.path for op in ops if isinstance(op, Absent)}
    assert {PI_DEFAULTS["watchdog_path"], f"{PI_DEFAULTS['config_dir']}/ssh_config", f"{PI_DEFAULTS['config_dir']}/known_hosts"} <= absent
    # ... before any instance starts: the old tunnel frees its ports on the VPS first
    order = [getattr(op, "unit", None) for op in ops]
    assert order.index(PI_DEFAULTS["legacy_unit"]) < order.index("pitunnel@main.service")
    for path in (pi_locations.watchdog_path("main"), f"/etc/systemd/system/{PI_DEFAULTS['watchdog_unit']}"):
        assert file_op(ops, path).notify == ("restart watchdog main",)


def load(tmp_path: Path, text: str) -> Inventory:
    file = tmp_path / "hosts.yml"
    file.write_text("settings: {known_hosts: known_hosts}\n" + textwrap.dedent(text).lstrip())
    return load_inventory(file, save_allocations=False)


def test_two_vpses_two_paths_each_with_its_own_files_ports_and_handlers(tmp_path: Path) -> None:
    inv = load(tmp_path, """
    vps:
      main: {address: 203.0.113.10}
      backup: {address: 198.51.100.20, port: 2200}
    pis:
      pi1:
        address: 10.0.0.1
        vps: [main, backup]
        tunnels:
          ssh: {type: ssh, remote_port: 20022, public: true}
          web: {type: http}
      pi2:
        address: 10.0.0.2
        vps: backup
        tunnels:
          ssh: {type: ssh}
    """)
    pi = inv.pis["pi1"]
    assert pi.all_vps == ("main", "backup") and [p.vps for p in pi.paths()] == ["main", "backup"]
    # the backup gave its first auto port to pi1 (in file order), the main its own: ports per VPS
    assert [t.remote_port for t in pi.path("main").tunnels] == [20022, 20000]
    assert [t.remote_port for t in pi.path("backup").tunnels] == [20022, 20000]
    assert inv.pis["pi2"].tunnels[0].remote_port == 20001
    keys = {"main": [HOST_KEY], "backup": ["ecdsa-sha2-nistp256 AAAAE2VjZHNh"]}
    ops = [*pi_steps.template_ops(pi), *(op for v in pi.all_vps for op in pi_steps.path_ops(pi, inv.vps[v], keys[v]))]
    assert text_of(ops, "/etc/pitunnel/backup/known_hosts") == "[198.51.100.20]:2200 ecdsa-sha2-nistp256 AAAAE2VjZHNh\n"
    assert text_of(ops, "/etc/pitunnel/main/known_hosts") == f"203.0.113.10 {HOST_KEY}\n"
    backup = directives(text_of(ops, "/etc/pitunnel/backup/ssh_config"))
    assert "HostName 198.51.100.20" in backup and "Port 2200" in backup
    assert "UserKnownHostsFile /etc/pitunnel/backup/known_hosts" in backup
    assert file_op(ops, PI_DEFAULTS["unit_path"]).notify == ("restart tunnel main", "restart tunnel backup")
    assert file_op(ops, "/etc/pitunnel/backup/ssh_config").notify == ("restart tunnel backup",)
    assert 'unit=pitunnel@backup.service' in text_of(ops, "/usr/local/lib/pitunnel/watchdog-backup")
    units = [op.unit for op in ops if isinstance(op, Service) and op.running]
    assert units == ["pitunnel@main.service", "pitunnel-watchdog@main.service",
                     "pitunnel@backup.service", "pitunnel-watchdog@backup.service"]
    # handlers restart only a running instance: a path whose VPS did not answer is not started half-made
    handlers = {h.name: h.commands for h in pi_steps.handlers(None, vpses=pi.all_vps)}  # type: ignore[arg-type]
    assert handlers["restart tunnel backup"] == ["systemctl daemon-reload", pi_steps.restart_tunnel("pitunnel@backup.service")]
    assert handlers["restart tunnel backup"][1].startswith("systemctl try-restart pitunnel@backup.service ||")
    # each VPS authorises the Pi's one key for its own listeners only
    main_line = vps_authorized.authorized_line(inv.vps["main"], pi.path("main"), "ssh-ed25519 AAAAkey1")
    backup_line = vps_authorized.authorized_line(inv.vps["backup"], pi.path("backup"), "ssh-ed25519 AAAAkey1")
    assert 'permitlisten="127.0.0.1:20000"' in main_line and 'permitlisten="127.0.0.1:20000"' in backup_line
    # every VPS routes the Pi's http tunnel the same way, to its own port there
    routes = {v: [(r.pi, r.name, r.path, r.port) for r in vps_nginx.http_routes(inv, inv.vps[v])] for v in inv.vps}
    assert routes == {"main": [("pi1", "web", "/pi1/web/", 20000)], "backup": [("pi1", "web", "/pi1/web/", 20000)]}


def test_a_vps_the_pi_no_longer_names_loses_its_instance() -> None:
    ops = pi_steps.retired_path_ops("old")
    services = [(op.unit, op.enabled, op.running) for op in ops if isinstance(op, Service)]
    assert services == [("pitunnel@old.service", False, False), ("pitunnel-watchdog@old.service", False, False)]
    assert {op.path for op in ops if isinstance(op, Absent)} == {"/etc/pitunnel/old", "/usr/local/lib/pitunnel/watchdog-old"}


def test_watchdog_restarts_a_silent_tunnel_when_the_network_is_back(inv: Inventory) -> None:
    pi, vps = inv.pis["pi1"], inv.vps_of(inv.pis["pi1"].first_path)
    script = text_of(pi_ops(inv, "pi1"), pi_locations.watchdog_path("main"))
    # woken by netlink when a link comes up or an address or default route appears
    assert "ip -o monitor link address route" in script
    assert "*LOWER_UP*" in script and 'default*' in script
    stale, suspect = pi_steps.stale_after_ms(pi), pi_steps.suspect_after_ms(pi, vps)
    assert stale == (pi.server_alive_interval + 3) * 1000  # the VPS answers the Pi's own keepalive
    assert suspect == (min(vps.client_alive_interval, pi.server_alive_interval) + 3) * 1000
    # dead: silent longer than a live connection ever is, or suspect with data the VPS has not acknowledged
    assert (f'[ "$rcv" -gt {stale} ] || {{ [ "$rcv" -gt {suspect} ] && [ "${{unacked:-0}}" -gt 0 ]; }}; then'
            in script)
    # suspect with nothing unacknowledged: looked at once more, 3 s later (after its keepalive went out)
    assert f'elif [ "$rcv" -gt {suspect} ] && [ "$1" = network ]; then\n        recheck=1' in script
    assert 'if [ "$recheck" = 1 ]; then\n    echo 3' in script
    assert 'recheck=0\n        check recheck' in script and "/unacked:[0-9]+/" in script
    assert f'"$snd" -gt {pi_steps.hang_after_ms(pi)} ]' in script
    assert 'read -r -t "$(next_check)" event' in script and f"echo {PI_DEFAULTS['watchdog_every']}" in script
    assert "echo 1\n" in script  # every second while the tunnel is down
    # a VPS back from an outage: autossh is woken from its back-off as soon as the VPS's sshd answers
    assert "vps_answers" in script and '"/dev/tcp/$0/$1"' in script and 'systemctl try-restart "$unit"' in script
    assert "systemctl restart" not in script  # never starts a unit its operator stopped meanwhile
    # it signals only the unit's own ssh, never an ssh by name
    assert 'systemctl show -p MainPID --value "$unit"' in script and "unit=pitunnel@main.service" in script
    assert 'children=$(tunnel_ssh "$main")' in script
    # autossh between tries is restarted through systemd, never sent SIGUSR1 (it dies of it there)
    assert "USR1" not in script.replace("(Not SIGUSR1:", "")
    # ... found by the unit's cgroup and socket inodes, never by text a process controls (its name)
    assert "cgroup.procs" in script and "/proc/\"$1\"/fd/*" in script and "ino:" in script
    assert "pid=" not in script and "ss -Htien " in script and "pgrep" not in script
    assert "pkill" not in script and "killall" not in script
    unit = text_of(pi_ops(inv, "pi1"), f"/etc/systemd/system/{PI_DEFAULTS['watchdog_unit']}")
    assert "Restart=always" in unit and "StartLimitIntervalSec=0" in unit and "Type=oneshot" not in unit
    assert f"ExecStart={PI_DEFAULTS['watchdog_path']}-%i" in unit
    # stopping one VPS's watchdog removes its own route only, never another VPS's
    assert f"ExecStopPost=-{PI_DEFAULTS['watchdog_path']}-%i stop" in unit and "route flush" not in unit
    assert 'if [ "${1:-}" = stop ]' in script


def test_watchdog_script_is_valid_bash(inv: Inventory, tmp_path: Path) -> None:
    script = tmp_path / "watchdog"
    script.write_text(text_of(pi_ops(inv, "pi1"), pi_locations.watchdog_path("main")))
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_tunnel_gives_up_a_connection_attempt_quickly(inv: Inventory) -> None:
    config = path_file(inv, "pi1", "ssh_config")
    assert f"ConnectTimeout {PI_DEFAULTS['tunnel_connect_timeout']}\n" in config
    assert PI_DEFAULTS["tunnel_connect_timeout"] <= 5


def test_pi_base_ops_laptop_key_and_key_pair(inv: Inventory) -> None:
    ops, key = pi_steps.base_ops(inv, inv.pis["pi1"])
    assert isinstance(key, KeyPair) and key in ops
    assert key.owner == "pitunnel" and key.comment == "pitunnel:pi1"
    laptop_pub = (inv.settings.laptop_key.with_name("laptop.pub")).read_text().split()  # type: ignore[union-attr]
    op = file_op(ops, "/home/pi/.ssh/authorized_keys")
    assert (op.owner, op.group, op.mode) == ("pi", "pi", 0o600)
    existing = FileState(True, "pi", "pi", 0o600, b"ssh-rsa AAAAmine me@desk\n")
    text = op.wanted(existing)
    assert text == f"ssh-rsa AAAAmine me@desk\n{laptop_pub[0]} {laptop_pub[1]} {PI_DEFAULTS['laptop_key_marker']}\n"
    assert op.wanted(FileState(True, "pi", "pi", 0o600, text.encode())) == text
    # a Pi whose tunnel runs as its login user gets no separate account
    from pitunnel.ops import SystemUser
    ops2, _ = pi_steps.base_ops(inv, inv.pis["pi2"])
    assert not any(isinstance(o, SystemUser) for o in ops2)
    assert any(isinstance(o, SystemUser) and o.name == "pitunnel" for o in ops)


def test_loopback_exempt_from_penalties_only_where_sshd_has_them(inv: Inventory) -> None:
    pi = inv.pis["pi1"]
    assert any(t.kind == "ssh" for t in pi.tunnels)
    assert pi_steps.loopback_ops(pi, penalties=False) == []  # OpenSSH before 9.8: the keyword would not parse
    (op,) = pi_steps.loopback_ops(pi, penalties=True)
    assert isinstance(op, File) and op.path == PI_DEFAULTS["loopback_dropin"]
    assert op.validate == "sshd -t" and op.notify == ("reload sshd",)
    text = op.wanted(FileState(exists=False))
    assert directives(text) == ["PerSourcePenaltyExemptList 127.0.0.1"]
    # sshd keeps the first value it reads: the drop-in must sort before Debian's own names (50-cloud-init...)
    assert PI_DEFAULTS["loopback_dropin"].startswith("/etc/ssh/sshd_config.d/10-")


def test_loopback_exemption_needs_an_ssh_tunnel(inv: Inventory) -> None:
    import dataclasses

    pi = inv.pis["pi1"]
    http_only = dataclasses.replace(pi, tunnels=tuple(t for t in pi.tunnels if t.kind != "ssh"))
    assert pi_steps.loopback_ops(http_only, penalties=True) == []


def test_penalties_fact_reads_sshd_effective_config() -> None:
    observer = pi_sshd.penalties_observer()
    assert "sshd -T" in observer.fact.script and "persourcepenalties" in observer.fact.script
    assert observer.fact.process("1\n") is True and observer.fact.process("0\n") is False
    assert observer.describe(True).startswith("yes") and observer.describe(False).startswith("no")


def test_sshd_reload_on_the_pi_is_guarded_by_a_fresh_login() -> None:
    handlers = {h.name: h for h in pi_steps.handlers(remote=None)}  # type: ignore[arg-type]
    reload = handlers["reload sshd"]
    assert reload.commands[0] == "sshd -t" and reload.verify is not None


# ---------------------------------------------------------------------------
# Nginx on a VPS that already serves the user's own site


def _nginx_facts(debian: str, servers: str) -> Facts:
    found = Facts()
    found[vps_nginx.DEBIAN_DEFAULT_FACT.key] = (0, debian)
    found[vps_nginx.DEFAULT_SERVERS_FACT.key] = (0, servers)
    return found


DEBIAN_LINK = "/etc/nginx/sites-available/default"
SUM = "0123456789abcdef0123456789abcdef"


def test_debian_default_set_aside_only_while_unmodified() -> None:
    op = vps_nginx.DebianDefaultSetAside()
    plan = op.plan(_nginx_facts(f"{DEBIAN_LINK}\n{SUM}\n{SUM}\nnone", ""))
    assert "rm -f /etc/nginx/sites-enabled/default" in plan.commands
    assert ": > /var/lib/pitunnel-state/nginx-default-site" in plan.commands
    edited = op.plan(_nginx_facts(f"{DEBIAN_LINK}\nffff{SUM[4:]}\n{SUM}\nnone", ""))
    assert not edited.changes and "not Debian's unmodified" in edited.reason
    assert not op.plan(_nginx_facts(f"FILE\n{SUM}\n{SUM}\nnone", "")).changes  # a file of the user's there
    assert op.plan(_nginx_facts(f"ABSENT\n{SUM}\n{SUM}\nnone", "")).reason == "not there"


def test_debian_default_put_back_only_if_pitunnel_set_it_aside() -> None:
    op = vps_nginx.DebianDefaultRestored()
    assert not op.plan(_nginx_facts(f"ABSENT\n{SUM}\n{SUM}\nnone", "")).changes
    plan = op.plan(_nginx_facts(f"ABSENT\n{SUM}\n{SUM}\nrecorded", ""))
    assert any("ln -s /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default" in c for c in plan.commands)


@pytest.mark.parametrize(("servers", "ports", "found"), [
    ("", {80}, []),
    ("/etc/nginx/sites-enabled/default \tlisten 80 default_server;", {80}, []),  # Debian's, set aside
    ("/etc/nginx/sites-enabled/site     listen 80 default_server;", {80}, ["/etc/nginx/sites-enabled/site"]),
    ("/etc/nginx/sites-enabled/site listen [::]:80 default_server;", {80}, ["/etc/nginx/sites-enabled/site"]),
    ("/etc/nginx/conf.d/a.conf listen 0.0.0.0:8080 default;", {80}, []),
    ("/etc/nginx/conf.d/a.conf listen 443 ssl default_server;", {80, 443}, ["/etc/nginx/conf.d/a.conf"]),
])
def test_default_server_of_the_users_is_not_claimed(servers: str, ports: set[int], found: list[str]) -> None:
    assert vps_nginx.others_default_servers(_nginx_facts(f"{DEBIAN_LINK}\n{SUM}\n{SUM}\nnone", servers), ports) == found


def test_default_site_claims_default_server_unless_told_not_to() -> None:
    context = dict(http_port=80, https_port=443, tls_certificate=None, tls_key=None, site_tls=None, public_name=None,
                   acme=False)
    assert "listen 80 default_server;" in vps_role.ROLE.render("nginx-default-site.conf.j2", **context)
    assert "default_server" not in vps_role.ROLE.render("nginx-default-site.conf.j2", claim_default=False, **context)


# ---------------------------------------------------------------------------
# the VPS reaper: which journal lines it believes (its own bash, run on sample `journalctl -o json` lines)

REAPER_PROBE = r"""
while IFS= read -r entry; do
  if field MESSAGE "$entry" && [[ $value =~ $failed_re ]]; then
    port=${BASH_REMATCH[1]}; field _PID "$entry"; echo "failure port=$port pid=$value"
  elif field MESSAGE "$entry" && [[ $value =~ $accepted_re ]]; then echo "login user=${BASH_REMATCH[1]} key=${BASH_REMATCH[2]}"
  elif field MESSAGE "$entry" && [[ $value =~ $child_re ]]; then echo "child ${BASH_REMATCH[1]}"
  else echo ignored; fi
done
"""


def test_reaper_believes_only_sshds_own_whole_lines() -> None:
    script = vps_role.ROLE.render("reaper.sh.j2")
    functions = script[script.index("field() {"):script.index("sshd_comms=")]
    lines = [
        '{"_PID":"701","_UID":"999","MESSAGE":"error: channel_setup_fwd_listener_tcpip: cannot listen to port: 20000"}',
        # a Pi's own disconnect reason, as sshd logs it: not sshd's failure line
        '{"_PID":"702","_UID":"999","MESSAGE":"Received disconnect from 198.18.0.102 port 4:11: cannot listen to port: 20000"}',
        '{"_PID":"703","_UID":"999","MESSAGE":"x error: channel_setup_fwd_listener_tcpip: cannot listen to port: 20000"}',
        # a value that quotes a whole field cannot pass for one: JSON escapes its quotes
        '{"_UID":"999","MESSAGE":"say \\"MESSAGE\\":\\"error: channel_setup_fwd_listener_tcpip: cannot listen to port: 1\\"",'
        '"_PID":"704"}',
        '{"MESSAGE":"Accepted publickey for pitunnel from 198.18.0.101 port 52280 ssh2: ED25519 SHA256:3Psa+/9x","_PID":"9"}',
        '{"MESSAGE":"User child is on pid 708","_PID":"9"}',
    ]
    run = subprocess.run(["bash", "-c", functions + REAPER_PROBE], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, timeout=10)
    assert run.stdout.splitlines() == ["failure port=20000 pid=701", "ignored", "ignored", "ignored",
                                       "login user=pitunnel key=SHA256:3Psa+/9x", "child 708"], run.stderr


def test_verify_probes_never_ask_for_the_running_tunnels_own_forwards(inv: Inventory, tmp_path: Path) -> None:
    """The probes must be refused for what they try, not because the tunnel's own ports are taken."""
    from pitunnel.roles.probes.exposure import probe_script

    pi = inv.pis["pi1"]
    script = probe_script(pi, inv.vps_of(pi.first_path), ["127.0.0.1:20023"], 29999)
    assert script.count("ssh -F \"$probe_config\"") == 5 and "ssh -F /etc" not in script
    first = script.splitlines()[0]
    config = tmp_path / "ssh_config"
    config.write_text(ssh_config(inv, "pi1"))
    done = subprocess.run(["bash", "-c", first.replace("/etc/pitunnel/main/ssh_config", str(config))
                           + ' && cat "$probe_config" && rm -f "$probe_config"'], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "RemoteForward" not in done.stdout and f"Host {PI_DEFAULTS['ssh_host_alias']}" in done.stdout
    assert "ExitOnForwardFailure yes" in done.stdout and "RemoteForward" in config.read_text()
    assert script.rstrip().endswith('rm -f "$probe_config"')
