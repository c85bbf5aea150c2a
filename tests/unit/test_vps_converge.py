"""roles/vps/steps.py on a scripted VPS (tests/unit/fake_hosts.py) that keeps what certbot obtained: HTTPS for a
name follows in the same run once its certificate is there, a name the CA refuses fails alone and the VPS with
it, check mode and a run with every certificate there read and write once; the packages, handlers and teardown
a VPS's settings call for; the reads the VPS role makes, run against scripted commands in a real shell."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path

import pytest

from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, load_inventory
from pitunnel.ops import Absent, Directory, File, Op, Service
from pitunnel.remote import Result
from pitunnel.roles.site import provision_vps
from pitunnel.roles.vps import acme
from pitunnel.roles.vps import role as vps_role
from pitunnel.roles.vps import steps as vps_steps
from tests.unit.fake_hosts import ACCOUNT, FakeHost, lines, load, play_on
from tests.unit.test_https_config import INVENTORY, found, write

D = vps_role.VPS_DEFAULTS
NAMES = ("vps.example.com", "app.example.com", "cam.example.com")
USERS_DEFAULT = "/etc/nginx/conf.d/mine.conf listen 80 default_server;\n/etc/nginx/conf.d/mine.conf listen 443 ssl default_server;"


class CertbotVps(FakeHost):
    """A VPS where each certbot run the CA does not refuse leaves its certificate, as certbot's files show it."""

    def __init__(self, *, have: tuple[str, ...] = (), refuses: str | None = None, users: str = "") -> None:
        super().__init__("main", [("getent passwd pitunnel || true", ACCOUNT), ("/users", "pitunnel"),
                                  ("dpkg-query", "nginx installed\ncertbot installed"), ("default(_server)?", users)],
                         fail_on=f"-d {refuses} " if refuses else None)
        self.have = have

    def answer(self, snippet: str) -> str:
        if "renewal/pitunnel-" not in snippet:
            return super().answer(snippet)
        got = [n for n in NAMES if n in self.have or any(f"certbot certonly" in b and f"-d {n} " in b and b != self.refused
                                                         for b in self.ops)]
        return "".join(f"pitunnel-{n}|https://ca.example.net/dir|yes|no|Jan  1 00:00:00 2031 GMT\n" for n in got)

    def _run(self, script: str, timeout: float | None) -> Result:
        if "renewal/pitunnel-" in script:  # a read of certbot's files of its own (not one of a step's facts)
            self.commands = [("renewal/pitunnel-", self.answer("renewal/pitunnel-"))]
        return super()._run(script, timeout)

    @property
    def refused(self) -> str | None:
        return next((b for b in self.ops if self.fail_on is not None and self.fail_on in b), None)


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return load_inventory(write(tmp_path, INVENTORY), save_allocations=False)


def writes(host: FakeHost, path: str) -> list[str]:
    """Each content written to `path` on `host`, in order."""
    parent = path.rsplit("/", 1)[0]
    return ["".join(base64.b64decode(b).decode() for b in re.findall(r"printf %s (\S+) \| base64 -d > new", body))
            for body in host.ops if f"pitunnel_enter {parent} {path}\n" in body]


def wanted(ops: list[Op], path: str) -> str:
    [op] = [o for o in ops if isinstance(o, File) and o.path == path]
    return op.wanted(FileState(False))


def cam_site(inv: Inventory) -> str:
    return next(o.path for o in vps_steps.converge_ops(inv, inv.vps["main"])
                if isinstance(o, File) and o.path.startswith(D["nginx_sites_dir"]) and "pi1_cam" in o.path)


@pytest.mark.parametrize(("users", "rejects"), [
    (USERS_DEFAULT, False),  # the user's default servers on 80 and 443: theirs to answer, HTTPS too
    (USERS_DEFAULT.splitlines()[0], True),  # the user's on 80 only: pitunnel's server refuses unknown names on 443
])
def test_https_follows_in_the_same_run_for_each_name_obtained_and_a_refused_name_fails_the_vps(
        inv: Inventory, users: str, rejects: bool, capsys: pytest.CaptureFixture[str]) -> None:
    host = CertbotVps(refuses="vps.example.com", users=users)  # the VPS's own name: no certificate for its server
    play = play_on(inv, {"main": host})  # type: ignore[dict-item]
    provision_vps(play)
    assert play.failed == {"main"}  # everything else is done; the run says so at the end
    # the second converge: as the first, the user's default servers still theirs, with the certificates now there
    after = vps_steps.converge_ops(inv, inv.vps["main"], claim_default=False, reject_unknown=rejects,
                                   certs=found("app.example.com", "cam.example.com"))
    cam = cam_site(inv)
    before, then = writes(host, cam)
    assert "ssl_certificate" not in before and then == wanted(after, cam)
    assert "/etc/letsencrypt/live/pitunnel-cam.example.com/fullchain.pem" in then
    assert writes(host, D["nginx_default_site"])[-1] == wanted(after, D["nginx_default_site"])
    default = writes(host, D["nginx_default_site"])[-1]
    assert "listen 80 default_server" not in default  # the user's stays the default server on 80
    assert ("ssl_reject_handshake on;" in default) is rejects  # unknown names on 443: theirs, or refused
    assert not any("usermod" in b or "useradd" in b for b in host.ops[-20:])  # the account is not converged again
    out = lines(capsys)
    assert "changed main CA bundle for the ACME directory - create" in out
    assert "changed main certbot renewals trust the ACME directory's CA - create" in out
    last_cert = max(i for i, l in enumerate(out) if " certificate cam.example.com (ACME)" in l)
    assert "changed main handler reload nginx - ran once" in out[last_cert:]  # Nginx serves the HTTPS config now


def test_a_vps_whose_certificates_are_all_there_is_converged_once(inv: Inventory,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    host = CertbotVps(have=NAMES)
    play = play_on(inv, {"main": host})  # type: ignore[dict-item]
    provision_vps(play)
    assert play.failed == set()
    out = lines(capsys)
    assert [l for l in out if "nginx site cam.example.com" in l] == ["changed main nginx site cam.example.com -> pi1/cam - create"]
    assert sum("renewal/pitunnel-" in s and "@@OP" not in s for s in host.scripts) == 1 + len(NAMES)  # no read after
    assert "/etc/letsencrypt/live/pitunnel-cam.example.com/fullchain.pem" in writes(host, cam_site(inv))[0]


def test_check_mode_plans_the_certificates_and_no_second_converge(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    host = CertbotVps()
    play = play_on(inv, {"main": host}, check=True)  # type: ignore[dict-item]
    provision_vps(play)
    assert play.failed == set() and host.ops == []
    out = lines(capsys)
    assert "would change main certificate cam.example.com (ACME) - obtain from https://ca.example.net/dir" in out
    assert [l for l in out if "nginx site cam.example.com" in l] == [
        "would change main nginx site cam.example.com -> pi1/cam - create"]


def test_the_ca_bundles_folder_is_made_before_the_bundle_certbot_reads(inv: Inventory) -> None:
    """acme.ca_bundle goes to /etc/pitunnel/acme-ca.pem: on a VPS that never had that folder it is made first,
    root's and 755, then the bundle, then certbot's drop-in naming it."""
    ops = vps_steps.acme_ops(inv.vps["main"])
    assert [(type(op).__name__, op.path) for op in ops] == [  # type: ignore[attr-defined]
        ("Directory", D["acme_webroot"]), ("Directory", "/etc/pitunnel"), ("File", D["acme_ca_bundle"]),
        ("File", D["certbot_dropin"])]
    folder = ops[1]
    assert isinstance(folder, Directory) and folder.title == "directory /etc/pitunnel"
    assert (folder.owner, folder.group, folder.mode) == ("root", "root", 0o755)


def test_a_vps_without_acme_gets_no_certificate_step(tmp_path: Path) -> None:
    text = INVENTORY.replace('    acme: {email: admin@example.com, directory: "https://ca.example.net/dir", ca_bundle: ca.pem}\n', "")
    text = text.replace(", basic_auth_file: pw", "").replace(", hsts: true", "")
    inv = load_inventory(write(tmp_path, text), save_allocations=False)
    host = CertbotVps()
    play = play_on(inv, {"main": host})  # type: ignore[dict-item]
    provision_vps(play)
    assert play.failed == set() and not any("certbot" in b for b in host.ops)
    assert vps_steps.packages(inv.vps["main"]).names == (D["nginx_package"],)


# ---------------------------------------------------------------------------------------- packages, handlers


def test_the_packages_follow_the_vps_settings(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, INVENTORY.replace("    public_name: vps.example.com\n",
                                                           "    public_name: vps.example.com\n    metrics: true\n")),
                         save_allocations=False)
    assert vps_steps.packages(inv.vps["main"]).names == ("nginx", "certbot", "prometheus-node-exporter")


@pytest.mark.parametrize(("handler", "commands"), [
    ("restart metrics", ["systemctl daemon-reload", "systemctl restart pitunnel-metrics.service"]),
    ("restart node exporter", ["systemctl daemon-reload", "systemctl restart prometheus-node-exporter.service"]),
    ("restart node exporter if there", ["systemctl daemon-reload",
                                        "! systemctl cat prometheus-node-exporter.service >/dev/null 2>&1 || "
                                        "systemctl try-restart prometheus-node-exporter.service"]),
])
def test_the_metrics_handlers_reload_systemd_first(handler: str, commands: list[str]) -> None:
    [found_] = [h for h in vps_steps.handlers(FakeHost("main")) if h.name == handler]  # type: ignore[arg-type]
    assert list(found_.commands) == commands


def test_every_handler_a_vps_op_notifies_is_there(tmp_path: Path) -> None:
    """Each name an op of provision or teardown notifies (metrics on, ACME with a CA bundle) has its handler."""
    inv = load_inventory(write(tmp_path, INVENTORY.replace("    public_name: vps.example.com\n",
                                                           "    public_name: vps.example.com\n    metrics: true\n")),
                         save_allocations=False)
    vps = inv.vps["main"]
    names = {h.name for h in vps_steps.handlers(FakeHost("main"))}  # type: ignore[arg-type]
    ops = [*vps_steps.converge_ops(inv, vps), *vps_steps.teardown_ops(vps, purge=True)]
    notified = {n for op in ops for n in getattr(op, "notify", ())}
    assert {"restart metrics", "daemon-reload", "reload sshd", "reload nginx"} <= notified <= names


# ------------------------------------------------------------------------------------------------ teardown


def test_teardown_stops_the_reaper_and_removes_the_acme_and_revoked_files(inv: Inventory) -> None:
    ops = vps_steps.teardown_ops(inv.vps["main"], purge=False)
    [reaper] = [o for o in ops if isinstance(o, Service) and o.unit == D["reaper_unit"]]
    assert (reaper.enabled, reaper.running) == (False, False)
    absent = {o.path: o for o in ops if isinstance(o, Absent)}
    assert {D["revoked_keys"], D["acme_webroot"], D["certbot_dropin"], D["acme_ca_bundle"]} <= set(absent)
    assert absent[D["certbot_dropin"]].notify == ("daemon-reload",)  # certbot's timer forgets the CA bundle
    folders = [(o.path, o.ours) for o in ops if isinstance(o, acme.FolderGone)]
    assert folders == [("/etc/systemd/system/certbot.service.d", frozenset({"pitunnel.conf"})),
                       ("/etc/pitunnel", frozenset({"acme-ca.pem"}))]


def test_teardown_of_a_vps_with_certbots_dropin_reloads_systemd_and_removes_the_emptied_folder(inv: Inventory,
                                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("main", [(f"[ -e {D['certbot_dropin']} ]", "yes"), ("ls -A /etc/systemd/system/certbot.service.d", "pitunnel.conf\n")])
    vps_steps.teardown(play_on(inv, {"main": host}), purge=False)  # type: ignore[dict-item]
    out = lines(capsys)
    assert f"changed main absent {D['certbot_dropin']} - remove" in out
    assert "changed main handler daemon-reload - ran once" in out


# ---------------------------------------------------------------------------------- the VPS's reads, in sh


def run_fact(script: str, tmp_path: Path, programs: dict[str, str]) -> str:
    """`script` in a real sh with scripted programs first on PATH."""
    for name, body in programs.items():
        (tmp_path / name).write_text(f"#!/bin/sh\n{body}\n")
        (tmp_path / name).chmod(0o755)
    done = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout


SSHD_T = """[ "$*" = "-T -C user=pitunnel,host=pitunnel,addr=192.0.2.1" ] || { echo "bad query: $*" >&2; exit 1; }
printf 'port 22\\npermitlisten 127.0.0.1:* 0.0.0.0:*\\npermitopen any\\n'"""


def test_the_listeners_sshd_permits_are_read_from_its_effective_config_for_the_tunnel_account(
        inv: Inventory, tmp_path: Path) -> None:
    fact = vps_steps.permitted_fact(inv.vps["main"])
    out = run_fact(fact.script, tmp_path, {"sshd": SSHD_T})
    assert fact.process(out) == frozenset({"127.0.0.1:*", "0.0.0.0:*"})
    broken = run_fact(fact.script, tmp_path, {"sshd": "echo 'bad config' >&2; exit 255"})  # sshd -T refused: nothing
    assert fact.process(broken) == frozenset()


def test_the_tunnel_account_is_read_from_getent(inv: Inventory, tmp_path: Path) -> None:
    fact = vps_steps.account_observer(inv.vps["main"]).fact
    there = run_fact(fact.script, tmp_path, {"getent": f'[ "$*" = "passwd pitunnel" ] && echo "{ACCOUNT}"'})
    assert fact.process(there) is True
    assert fact.process(run_fact(fact.script, tmp_path, {"getent": "exit 2"})) is False


def test_bootstrap_keys_are_found_in_a_keys_file_with_bytes_that_are_not_utf8(tmp_path: Path) -> None:
    """A keys file someone edited in Latin-1 (a comment with é) still tells which Pis have a bootstrap key."""
    from pitunnel.report import Reporter
    from pitunnel.runner import Mode
    from pitunnel.roles.vps import authorized as vps_authorized
    from tests.unit.test_site import INVENTORY as SITE
    inv = load(tmp_path, SITE)
    vps = inv.vps["main"]
    boot = vps_authorized.authorized_line(vps, inv.pis["beta"].path("main"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIboot",
                                          expires="20991231000000Z")
    text = "# caf\xe9 keys\n".encode("latin-1") + f"{boot}\n".encode()
    host = FakeHost("main", [("|| echo MISSING", ACCOUNT), ("ssh_host_", "cur ssh-ed25519 AAAAhostkey\n"), ("ss -Htln", ""),
                             ("permitlisten", "permitlisten 127.0.0.1:*"),
                             ("authorized_keys", "pitunnel:pitunnel:600\n" + base64.b64encode(text).decode())])
    facts = vps_steps.authorise(host, inv, vps, [], Reporter(colour=False), Mode())  # type: ignore[arg-type]
    assert facts.bootstrapped == frozenset({"beta"})
    absent = FakeHost("main", [("|| echo MISSING", ACCOUNT), ("permitlisten", "permitlisten 127.0.0.1:*"),
                               ("authorized_keys", "ABSENT")])
    assert vps_steps.authorise(absent, inv, vps, [], Reporter(colour=False), Mode()).bootstrapped == frozenset()  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------- what the config names


def test_sshd_names_a_revoked_keys_file_only_once_a_pi_is_revoked(inv: Inventory) -> None:
    """sshd refuses every key while a RevokedKeys file it names cannot be read: none is named before a revoke
    (test_revoke.py proves the line once there is one)."""
    dropin = wanted(vps_steps.converge_ops(inv, inv.vps["main"]), D["sshd_dropin"])
    assert "RevokedKeys" not in dropin and "ForceCommand" in dropin


def test_a_vps_whose_acme_setting_was_removed_no_longer_serves_its_acme_certificate(tmp_path: Path) -> None:
    text = INVENTORY.replace('    acme: {email: admin@example.com, directory: "https://ca.example.net/dir", ca_bundle: ca.pem}\n',
                             "    tls_certificate: /etc/ssl/c.pem\n    tls_key: /etc/ssl/c.key\n")
    inv = load_inventory(write(tmp_path, text), save_allocations=False)
    default = wanted(vps_steps.converge_ops(inv, inv.vps["main"], certs=found("vps.example.com")), D["nginx_default_site"])
    assert "ssl_certificate /etc/ssl/c.pem;" in default and "letsencrypt" not in default  # certbot's is left as it is
