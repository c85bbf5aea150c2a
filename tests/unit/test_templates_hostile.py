"""Every template rendered with hostile but valid inventories (issue 22, item 4): values that pass the inventory's
checks yet hold the nastiest characters their grammar allows (an IPv6 zone id, '#', '(', '|', '&', '<', '%' in a
certificate's path, a trailing dot, Pis named after Nginx keywords). Each file is rendered by the roles' own code,
then read by the program that will read it on the host:

- scripts: `bash -n`; then their assignment lines run in bash, in an empty folder: each variable holds the value
  exactly, and nothing ran (no file appeared);
- the Pi's ssh_config: `ssh -G -F FILE pitunnel-vps`: the same options as a plain inventory's, with the values;
- systemd units: `systemd-analyze verify` in a root of their own (the host's units, stub binaries), nothing on
  stderr; and the same settings, section by section, as a plain inventory's;
- Nginx: `nginx -t` on a main config that includes them; and, read by Nginx's own token rules, the same
  directives with as many arguments as a plain inventory's, the values each one argument where they belong.

Deterministic (derandomized, no example database, no shrinking); both tests take about 8 s with 25 examples
(400 each passed, in 94 s, when they were written).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from pitunnel.facts import Facts
from pitunnel.inventory import Forward, Inventory, load_inventory
from pitunnel.inventory import values as checks
from pitunnel.inventory.checks import IMAGE_LOGINS
from pitunnel.inventory.errors import Invalid
from pitunnel.ops import File, Op
from pitunnel.roles.contract import listen_spec
from pitunnel.roles.pi import locations as pi_locations
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.pi import steps as pi_steps
from pitunnel.roles.vps import acme
from pitunnel.roles.vps import role as vps_role
from pitunnel.roles.vps import steps as vps_steps

PI_DEFAULTS, VPS_DEFAULTS = pi_role.PI_DEFAULTS, vps_role.VPS_DEFAULTS
TOOLS = ("bash", "ssh", "systemd-analyze", "nginx", "openssl", "ssh-keygen")
HOSTILE = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                   phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure shows its example as found
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
# Where the generated certificate files live: a folder whose own path the remote-path grammar accepts.
BASE = Path(tempfile.gettempdir())

pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason=f"needs {', '.join(TOOLS)} (scripts/setup.sh installs them)")


# ---------------------------------------------------------------------------
# Hostile but valid values, each by its grammar (pitunnel/inventory/values.py)

def valid(check: Any) -> Any:
    def ok(value: str) -> bool:
        try:
            check(value)
        except Invalid:
            return False
        return True
    return ok


NASTY_NAMES = ["off", "on", "include", "server", "location", "default", "none", "a", "a-", "x--1"]
names = st.one_of(st.sampled_from(NASTY_NAMES), st.from_regex(checks.NAME_RE, fullmatch=True)).filter(valid(checks.name))
users = st.from_regex(checks.USER_RE, fullmatch=True).filter(valid(checks.user))
tunnel_users = users.filter(valid(checks.tunnel_user)).filter(lambda u: u not in IMAGE_LOGINS)
_label = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,8}[A-Za-z0-9])?", fullmatch=True)
host_names = st.builds(lambda labels, dot: ".".join(labels) + dot, st.lists(_label, min_size=1, max_size=4),
                       st.sampled_from(["", "."])).filter(valid(checks.server_name))
zones = st.from_regex(r"[a-z0-9_.-]{1,15}", fullmatch=True).filter(lambda z: z not in (".", "..") and not z.isdigit())
ipv6_zoned = st.builds(lambda n, zone: f"fe80::{n:x}%{zone}", st.integers(1, 0xFFFF), zones)
ipv4 = st.ip_addresses(v=4).map(str)
addresses = st.one_of(ipv6_zoned, host_names, ipv4, st.ip_addresses(v=6).map(str)).filter(valid(checks.address))
server_names = st.one_of(host_names, host_names.map(lambda h: "*." + h)).filter(valid(checks.server_name))
url_paths = st.from_regex(r"/(?:[A-Za-z0-9._~-]{1,12}/){1,3}", fullmatch=True).filter(valid(checks.url_path))
file_names = st.from_regex(r"[A-Za-z0-9._+,:@%~#()!&|<>=^-]{1,16}", fullmatch=True)
listen_addresses = st.builds(lambda ip, port: f"{ip}:{port}", ipv4, st.integers(1, 65535))
sizes = st.one_of(st.integers(0, 999_999_999).map(str), st.from_regex(r"[0-9]{1,9}[kKmMgG]", fullmatch=True))


@st.composite
def hostile(draw: st.DrawFn) -> dict[str, Any]:
    vps, pi = draw(st.lists(names, min_size=2, max_size=2, unique=True))
    tunnels = draw(st.lists(names, min_size=4, max_size=4, unique=True))
    vps_user = draw(users)
    public_name = draw(host_names)
    server_name = draw(server_names.filter(lambda s: s.lower().rstrip(".") != public_name.lower().rstrip(".")))
    vps_port = draw(st.integers(1, 65535).filter(lambda p: p not in (80, 443)))  # not Nginx's (the inventory refuses that)
    # the metrics port is the VPS's own: it may not be its ssh, HTTP or HTTPS port (the inventory refuses that)
    metrics_address = draw(listen_addresses.filter(lambda a: int(a.rsplit(":", 1)[1]) not in (vps_port, 80, 443)))
    return dict(vps=vps, pi=pi, tunnels=tunnels, vps_address=draw(addresses), vps_port=vps_port,
                vps_user=vps_user, vps_tunnel_user=draw(tunnel_users.filter(lambda u: u != vps_user)),
                cert=draw(file_names), public_name=public_name, metrics_address=metrics_address,
                pi_address=draw(addresses), server_name=server_name, url_path=draw(url_paths), size=draw(sizes))


PLAIN: dict[str, Any] = dict(vps="main", pi="pi1", tunnels=["ssh", "pub", "site", "web"], vps_address="203.0.113.9",
                             vps_port=22, vps_user="root", vps_tunnel_user="pitunnel", cert="c", public_name="vps.example.com",
                             metrics_address="127.0.0.1:9100", pi_address="192.168.1.10", server_name="app.example.com",
                             url_path="/pi1/web/", size="10m")


# ---------------------------------------------------------------------------
# Rendering, by the roles' own code

@pytest.fixture(scope="module")
def world() -> Iterator[Path]:
    """Key files, a certificate, the host's units in a root of their own for systemd-analyze."""
    with tempfile.TemporaryDirectory(prefix="pitunnel-hostile-", dir=BASE) as name:
        base = Path(name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / "laptop")], check=True)
        (base / "web.htpasswd").write_text("alice:$apr1$abc$def\n")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-subj", "/CN=x", "-keyout", str(base / "k.pem"), "-out", str(base / "c.pem")],
                       check=True, capture_output=True)
        root = base / "root"
        (root / "usr/lib/systemd").mkdir(parents=True)
        shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
        (root / "etc/systemd/system").mkdir(parents=True)
        yield base


def inventory(world: Path, v: dict[str, Any], folder: Path) -> Inventory:
    ssh, pub, site, web = v["tunnels"]
    doc = {
        "settings": {"known_hosts": str(world / "known_hosts"), "laptop_key": str(world / "laptop")},
        "vps": {v["vps"]: {
            "address": v["vps_address"], "port": v["vps_port"], "user": v["vps_user"],
            "tunnel_user": v["vps_tunnel_user"], "tls_certificate": f"{folder}/{v['cert']}.crt",
            "tls_key": f"{folder}/{v['cert']}.key", "public_name": v["public_name"], "metrics": True,
            "metrics_address": v["metrics_address"]}},
        "pis": {v["pi"]: {"address": v["pi_address"], "tunnels": {
            ssh: {"type": "ssh"}, pub: {"type": "ssh", "public": True, "local_port": 2222},
            site: {"type": "http", "server_name": v["server_name"], "basic_auth_file": str(world / "web.htpasswd"),
                   "hsts": True},
            web: {"type": "http", "path": v["url_path"], "websocket": True, "client_max_body_size": v["size"]}}}},
    }
    path = folder / "hosts.yml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    return load_inventory(path, save_allocations=False)


def files(ops: list[Op]) -> dict[str, str]:
    from pitunnel.facts import FileState
    return {op.path: op.wanted(FileState(exists=False)) for op in ops if isinstance(op, File) and not op.secret}


def rendered(inv: Inventory) -> dict[str, str]:
    [vps] = inv.vps.values()
    [pi] = inv.pis.values()
    return {**files(vps_steps.converge_ops(inv, vps)), **files(pi_steps.template_ops(pi)),
            **files(pi_steps.path_ops(pi, vps, ["ssh-ed25519 AAAA"]))}


# ---------------------------------------------------------------------------
# The readers

def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=30)


def shell_values(script: str, names: list[str], arrays: list[str], cwd: Path) -> list[str]:
    """Run the script's assignments of `names` (one line each) and `arrays` (NAME=( ... ) blocks) in bash, in
    `cwd`; the values they set, NUL-separated."""
    lines = [line for line in script.splitlines() if re.match(rf"({'|'.join(names)})=", line)]
    for array in arrays:
        block = re.search(rf"^{array}=\(\n.*?^\)$", script, re.M | re.S)
        assert block is not None, array
        lines.append(block.group())
    show = " ".join([*(f'"${name}"' for name in names), *(f'"${{{a}[@]}}"' for a in arrays)])
    result = run("bash", "-c", "set -u\n" + "\n".join(lines) + f"\nprintf '%s\\0' {show}", cwd=cwd)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout.split("\0")[:-1]


def ssh_options(config: str, folder: Path) -> list[tuple[str, str]]:
    path = folder / "ssh_config"
    path.write_text(config)
    result = run("ssh", "-G", "-F", str(path), PI_DEFAULTS["ssh_host_alias"])
    assert result.returncode == 0, result.stderr
    return [(line.split(" ", 1) + [""])[:2] for line in result.stdout.splitlines()]  # type: ignore[misc]


def same_host(seen: str, given: str) -> bool:
    """ssh prints a host name in lowercase, and an IP address its own way (::ffff:3a96:e95a as ::ffff:58.150.233.90)."""
    try:
        return ipaddress.ip_address(seen) == ipaddress.ip_address(given)
    except ValueError:
        return seen == given.lower()


def unit_settings(text: str) -> list[tuple[str, str]]:
    """(section, key) of every setting, in order: the shape of a unit file."""
    shape, section = [], ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        else:
            shape.append((section, line.split("=", 1)[0]))
    return shape


def nginx_tokens(text: str) -> list[tuple[str, list[str]]]:
    """Directives as Nginx's tokenizer reads them (ngx_conf_read_token): a word ends at whitespace, ';', '{' or
    '}'; a quote opens a string only at a word's start, where '\\' escapes; '#' at a word's start is a comment."""
    directives: list[tuple[str, list[str]]] = []
    words: list[str] = []
    i = 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif c in ";{}":
            if words:
                directives.append((words[0], words[1:]))
            elif c == "}":
                directives.append(("}", []))
            words = []
            i += 1
        elif c in "\"'":
            j, word = i + 1, ""
            while text[j] != c:
                if text[j] == "\\" and text[j + 1] in "\"'\\":
                    j += 1
                word += text[j]
                j += 1
            words.append(word)
            i = j + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in ";{}":
                j += 1
            words.append(text[i:j])
            i = j
    return directives


def nginx_t(world: Path, folder: Path, out: dict[str, str], paths: list[str]) -> None:
    """nginx -t on the generated http-level files, with pitunnel's own folders moved under `folder`."""
    locations, auth = folder / "locations", folder / "auth"
    locations.mkdir()
    auth.mkdir()
    mine = {VPS_DEFAULTS["nginx_locations_dir"]: str(locations), VPS_DEFAULTS["nginx_auth_dir"]: str(auth)}

    def moved(text: str) -> str:
        for old, new in mine.items():
            text = text.replace(old, new)
        return text
    for path in paths:
        if path.startswith(VPS_DEFAULTS["nginx_locations_dir"] + "/"):
            (locations / Path(path).name).write_text(moved(out[path]))
        if path.startswith(VPS_DEFAULTS["nginx_auth_dir"] + "/"):
            (auth / Path(path).name).write_text("alice:x\n")
    body = "\n".join(moved(out[p]) for p in paths if not p.startswith(VPS_DEFAULTS["nginx_locations_dir"] + "/"))
    conf = folder / "nginx.conf"
    conf.write_text(f"pid {folder}/nginx.pid;\nerror_log {folder}/error.log;\nevents {{}}\n"
                    f"http {{\naccess_log off;\n{body}\n}}\n")
    result = run("nginx", "-t", "-q", "-c", str(conf), "-p", str(folder))
    assert result.returncode == 0, result.stderr + body


def nginx_paths(out: dict[str, str]) -> list[str]:
    return sorted(p for p in out if p.startswith("/etc/nginx/"))


# ---------------------------------------------------------------------------
# The property

@functools.cache
def plain(world: Path) -> dict[str, str]:
    """The files of the plain inventory: the shape every hostile one must keep."""
    folder = Path(tempfile.mkdtemp(dir=world))
    return rendered(inventory(world, PLAIN, folder))


def shape(out: dict[str, str], v: dict[str, Any]) -> dict[str, Any]:
    """The files by what they are, not by name (names carry the hostile names)."""
    vps = v["vps"]
    named = {
        "watchdog": pi_locations.watchdog_path(vps), "ssh_config": f"{pi_locations.vps_config_dir(vps)}/ssh_config",
        "tunnel_unit": PI_DEFAULTS["unit_path"], "watchdog_unit": f"/etc/systemd/system/{PI_DEFAULTS['watchdog_unit']}",
        "reaper": VPS_DEFAULTS["reaper_path"], "reaper_unit": VPS_DEFAULTS["reaper_unit_path"], "metrics": VPS_DEFAULTS["metrics_path"],
        "metrics_unit": VPS_DEFAULTS["metrics_unit_path"], "exporter": VPS_DEFAULTS["metrics_dropin"], "sshd": VPS_DEFAULTS["sshd_dropin"],
    }
    found = {key: out[path] for key, path in named.items()}
    found["nginx"] = [nginx_tokens(out[p]) for p in nginx_paths(out)]
    return found


def forward(f: Forward) -> str:
    """A forward as `ssh -G` prints it: "[LISTEN-ADDRESS]:PORT [127.0.0.1]:PORT"."""
    return f"[{f.listener.host}]:{f.listener.port} [127.0.0.1]:{f.local_port}"


@HOSTILE
@given(v=hostile())
@example(v={**PLAIN, "pi": "off", "vps_address": "fe80::1%eth0.10"})  # `auth_basic off` would be no auth at all
def test_every_template_still_parses_and_carries_each_value_where_intended(
        world: Path, v: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(dir=world))
    for suffix, source in ((".crt", "c.pem"), (".key", "k.pem")):
        shutil.copy(world / source, folder / f"{v['cert']}{suffix}")
    inv = inventory(world, v, folder)
    [vps] = inv.vps.values()
    [pi] = inv.pis.values()
    out = rendered(inv)
    got, base = shape(out, v), shape(plain(world), PLAIN)
    empty = folder / "cwd"
    empty.mkdir()

    # scripts: bash reads them; each value is one word, and nothing in a value ran
    for script in ("watchdog", "reaper", "metrics"):
        check = run("bash", "-n", "-c", got[script])
        assert check.returncode == 0, check.stderr
    assert shell_values(got["watchdog"], ["unit", "port", "vps_host", "proto"], [], empty) == [
        pi_locations.unit(vps.name), str(vps.port), vps.address, str(PI_DEFAULTS["route_proto"])]
    assert shell_values(got["metrics"], ["out", "vps_label"], ["tunnels"], empty) == [
        f"{VPS_DEFAULTS['metrics_textfile_dir']}/pitunnel.prom", vps.name,
        *(f"{p.name} {t.name} {listen_spec(t)}" for p, t in inv.tunnels_on(vps))]
    assert list(empty.iterdir()) == []

    # the tunnel's ssh config: the options of a plain one, the values as given
    options = ssh_options(got["ssh_config"], folder)
    assert [k for k, _ in options] == [k for k, _ in ssh_options(base["ssh_config"], folder)]
    assert "proxycommand" not in dict(options)
    found = dict(options)
    assert same_host(found["hostname"], vps.address)
    assert (found["user"], found["port"]) == (vps.tunnel_user, str(vps.port))
    assert found["identityfile"] == pi_locations.key_path(pi)
    assert found["userknownhostsfile"] == f"{pi_locations.vps_config_dir(vps.name)}/known_hosts"
    assert [w for k, w in options if k == "remoteforward"] == [forward(f) for f in pi_steps.forwards(pi.first_path)]

    # sshd: the Match block names the tunnel account, one word
    match = [line.split() for line in got["sshd"].splitlines() if line.startswith("Match ")]
    assert match == [["Match", "User", vps.tunnel_user]]

    # systemd units: verified in a root of their own, with the same settings as a plain inventory's
    for unit in ("tunnel_unit", "watchdog_unit", "reaper_unit", "metrics_unit", "exporter"):
        assert unit_settings(got[unit]) == unit_settings(base[unit]), unit
    assert f"\nUser={pi.tunnel_user}\n" in got["tunnel_unit"]
    assert f"/usr/local/lib/pitunnel/reaper {vps.tunnel_user}\n" in got["reaper_unit"]
    verify_units(world, out, vps.name)

    # Nginx: nginx -t passes; the directives of a plain inventory's files, each value one argument
    nginx_t(world, folder, out, nginx_paths(out))
    assert [[(d, len(a)) for d, a in f] for f in got["nginx"]] == [[(d, len(a)) for d, a in f] for f in base["nginx"]]
    arguments = [(d, a) for f in got["nginx"] for d, a in f]
    assert ("server_name", [v["server_name"]]) in arguments
    assert ("server_name", [vps.public_name.lower().rstrip(".") if vps.public_name else ""]) in arguments
    assert ("location", [v["url_path"]]) in arguments
    assert ("ssl_certificate", [f"{folder}/{v['cert']}.crt"]) in arguments
    assert ("ssl_certificate_key", [f"{folder}/{v['cert']}.key"]) in arguments
    assert ("client_max_body_size", [v["size"]]) in arguments
    assert ("auth_basic", [pi.name if pi.name != "off" else "off (pitunnel)"]) in arguments
    shutil.rmtree(folder)


def verify_units(world: Path, out: dict[str, str], vps: str) -> None:
    root = world / "root"
    system = root / "etc/systemd/system"
    shutil.rmtree(system)
    system.mkdir()
    for path, text in out.items():
        if path.startswith("/etc/systemd/system/"):
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    (system / VPS_DEFAULTS["metrics_service"]).write_text("[Service]\nExecStart=/usr/bin/prometheus-node-exporter\n")
    for binary in ("/usr/bin/autossh", "/usr/bin/prometheus-node-exporter", pi_locations.watchdog_path(vps),
                   VPS_DEFAULTS["reaper_path"], VPS_DEFAULTS["metrics_path"]):
        stub = root / binary.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
    units = [pi_locations.unit(vps), pi_locations.watchdog_unit(vps), VPS_DEFAULTS["reaper_unit"], VPS_DEFAULTS["metrics_unit"],
             VPS_DEFAULTS["metrics_service"]]
    result = run("systemd-analyze", "verify", f"--root={root}", "--man=no", "--generators=no", *units)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def sshd_effective(world: Path, dropin: str, connection: str) -> dict[str, str]:
    """`sshd -T -C CONNECTION` on a main config that includes the drop-in: the settings sshd applies. sshd wants
    its privilege separation folder, /run/sshd: a private /run of its own (a mount namespace) gives it one."""
    folder = Path(tempfile.mkdtemp(dir=world))
    (folder / "dropin.conf").write_text(dropin)
    (folder / "sshd_config").write_text(f"HostKey {world / 'laptop'}\nInclude {folder / 'dropin.conf'}\n")
    result = run("unshare", "-m", "--propagation", "private", "sh", "-c",
                 'mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && exec /usr/sbin/sshd -T -f "$0" -C "$1"',
                 str(folder / "sshd_config"), connection)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    shutil.rmtree(folder)
    return dict((line.split(" ", 1) + [""])[:2] for line in result.stdout.splitlines())  # type: ignore[misc]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None or not Path("/usr/sbin/sshd").exists(),
                    reason="sshd -T needs root (a private /run for /run/sshd) and openssh-server")
@HOSTILE
@given(v=hostile())
def test_sshd_applies_the_match_block_to_the_tunnel_account_only(world: Path, v: dict[str, Any]) -> None:
    folder = Path(tempfile.mkdtemp(dir=world))
    inv = inventory(world, v, folder)
    [vps] = inv.vps.values()
    dropin = rendered(inv)[VPS_DEFAULTS["sshd_dropin"]]
    tunnel = sshd_effective(world, dropin, f"user={vps.tunnel_user},host=pi,addr=192.0.2.1")
    allowed = frozenset(tunnel["permitlisten"].split())
    assert allowed == {f"{t.listener.host}:*" for _, t in inv.tunnels_on(vps)} or (allowed == {"none"} and not inv.tunnels_on(vps))
    assert all(vps_steps.permits(allowed, t.listener) for _, t in inv.tunnels_on(vps))
    assert (tunnel["forcecommand"], tunnel["allowtcpforwarding"], tunnel["permittty"]) == ("/bin/false", "remote", "no")
    other = sshd_effective(world, dropin, f"user={vps.tunnel_user}x,host=pi,addr=192.0.2.1")
    assert (other["permitlisten"], other["forcecommand"]) == ("any", "none")
    shutil.rmtree(folder)


# ---------------------------------------------------------------------------
# Shell built in Python: certbot's command line, with the ACME values of the inventory

emails = st.from_regex(r"[A-Za-z0-9!#%&*+/=?^_{|}~.-]{1,12}@[a-z0-9-]{1,8}\.[a-z]{2,4}", fullmatch=True).filter(
    valid(checks.email))
directories = st.from_regex(r"https://[A-Za-z0-9.:\[\]-]{1,20}(/[A-Za-z0-9._~/%-]{0,20})?", fullmatch=True).filter(
    valid(checks.https_url))


@HOSTILE
@given(email=emails, directory=directories, name=host_names)
def test_certbot_gets_each_acme_value_as_one_argument(world: Path, email: str, directory: str, name: str) -> None:
    folder = Path(tempfile.mkdtemp(dir=world))
    doc = {"settings": {"known_hosts": str(world / "known_hosts"), "laptop_key": str(world / "laptop")},
           "vps": {"main": {"address": "203.0.113.9", "public_name": name, "acme": {"email": email, "directory": directory}}}}
    (folder / "hosts.yml").write_text(yaml.safe_dump(doc))
    inv = load_inventory(folder / "hosts.yml", save_allocations=False)
    vps = inv.vps["main"]
    assert vps.acme is not None
    op = acme.Certificate(name, vps.acme, vps)
    script = "\n".join(op.plan(Facts({acme.acme_fact(vps).key: (0, "")})).commands)
    assert run("bash", "-n", "-c", script).returncode == 0
    [line] = [c for c in op.plan(Facts({acme.acme_fact(vps).key: (0, "")})).commands if "certbot certonly" in c]
    stub = folder / "bin"
    stub.mkdir()
    (stub / "certbot").write_text(f"#!/bin/sh\nprintf '%s\\0' \"$@\" > {folder}/args\n")
    (stub / "certbot").chmod(0o755)
    result = run("bash", "-c", f'PATH={stub}:$PATH\n{line}', cwd=folder)
    assert result.returncode == 0, result.stderr
    args = (folder / "args").read_text().split("\0")[:-1]
    assert args[args.index("-m") + 1] == email and args[args.index("--server") + 1] == directory
    assert args[args.index("-d") + 1] == name and args[0] == "certonly"
    assert sorted(p.name for p in folder.iterdir()) == ["args", "bin", "hosts.yml"]  # nothing else ran
    shutil.rmtree(folder)
