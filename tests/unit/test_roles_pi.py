"""The Pi role's decisions without a Pi: where the tunnel key lives, what each step plans and does for a given
state of the Pi (tests/unit/fake_hosts.py answers the engine's reads), and what teardown takes away
(what `invoke status` makes of a Pi's units: test_status.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, Listener
from pitunnel.remote import Credentials
from pitunnel.ops import Absent, Directory, File, KeyPair, Later, Packages, PackagesAbsent, Service, SystemUser, UserAbsent
from pitunnel.report import Reporter
from pitunnel.runner import StepFailed
from pitunnel.sshkeys import parse_public_key
from pitunnel.roles.contract import PiOffer
from pitunnel.roles.pi import locations as pi_locations
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.pi import sshd as pi_sshd
from pitunnel.roles.pi import steps as pi
from tests.unit.fake_hosts import FakeHost, in_order, lines, load, mode_of, play_on
from tests.unit.test_templates import keygen

D = pi_role.PI_DEFAULTS

INVENTORY = """
settings: {laptop_key: keys/laptop, known_hosts: kh}
vps:
  main: {address: 203.0.113.1, client_alive_interval: 12}
pis:
  alpha:
    address: 10.0.0.2
    user: admin
    vps: main
    server_alive_interval: 11
    server_alive_count_max: 3
    tunnels:
      ssh: {type: ssh, remote_port: 20022, public: true}
      web: {type: http, local_port: 8080, remote_port: 20080, path: /alpha/}
  beta:
    address: 10.0.0.3
    user: pi
    tunnel_user: pi
    vps: main
    disable_password_login: true
    tunnels:
      ssh: {type: ssh, remote_port: 20023}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("keys")
    return {"laptop": keygen(base / "laptop", "me@laptop"), "alpha": keygen(base / "alpha", "x"),
            "beta": keygen(base / "beta", "y")}


@pytest.fixture()
def inv(tmp_path: Path, keys: dict[str, str]) -> Inventory:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "laptop").write_text("private\n")
    (tmp_path / "keys" / "laptop.pub").write_text(keys["laptop"] + "\n")
    return load(tmp_path, INVENTORY)


@pytest.fixture()
def bare(tmp_path: Path) -> Inventory:
    """No laptop key."""
    (tmp_path / "bare").mkdir()
    return load(tmp_path / "bare", INVENTORY.replace("laptop_key: keys/laptop", "laptop_key: null"))


# ------------------------------------------------------------------------------ where things live, timings


def test_the_tunnel_key_lives_in_the_tunnel_accounts_home(inv: Inventory) -> None:
    assert pi_locations.key_path(inv.pis["alpha"]) == "/var/lib/pitunnel/.ssh/pitunnel_ed25519"  # its own account
    assert pi_locations.key_path(inv.pis["beta"]) == "/home/pi/.ssh/pitunnel_ed25519"  # the login user's
    assert pi_locations.home_of("root") == "/root" and pi_locations.home_of("pi") == "/home/pi"
    assert pi_locations.key_comment(inv.pis["beta"]) == "pitunnel:beta"


def test_each_tunnel_forwards_its_listener_to_the_pis_own_port(inv: Inventory) -> None:
    assert [f.spec for f in pi.forwards(inv.pis["alpha"].first_path)] == ["0.0.0.0:20022:127.0.0.1:22",
                                                              "127.0.0.1:20080:127.0.0.1:8080"]
    assert pi_sshd.public_ssh_ports(inv.pis["alpha"]) == [20022] and pi_sshd.public_ssh_ports(inv.pis["beta"]) == []


def test_a_listener_and_a_forward_are_values_made_from_the_tunnel(inv: Inventory) -> None:
    """What the ssh_config, permitlisten and the listening checks read: fields, one spelling (`spec`)."""
    ssh, web = inv.pis["alpha"].tunnels
    assert ssh.listener == Listener(True, 20022) and web.listener == Listener(False, 20080)
    assert (ssh.listener.host, ssh.listener.spec, web.listener.spec) == ("0.0.0.0", "0.0.0.0:20022", "127.0.0.1:20080")
    assert (web.forward.listener, web.forward.local_port, web.forward.target) == (web.listener, 8080, "127.0.0.1:8080")
    variables = pi.context(inv.pis["alpha"], inv.vps["main"])
    assert variables["remote_forwards"] == [{"listen": "0.0.0.0:20022", "target": "127.0.0.1:22"},
                                           {"listen": "127.0.0.1:20080", "target": "127.0.0.1:8080"}]


def test_hung_and_stale_timings_follow_the_keepalives(inv: Inventory) -> None:
    alpha, beta, main = inv.pis["alpha"], inv.pis["beta"], inv.vps["main"]
    assert pi.hang_after_ms(alpha) == (11 * 4 + 5) * 1000
    assert pi.hang_after_ms(beta) == (beta.server_alive_interval * (beta.server_alive_count_max + 1) + 5) * 1000
    assert pi.stale_after_ms(alpha) == (11 + 3) * 1000  # the VPS's answer to the Pi's keepalive
    assert pi.stale_after_ms(beta) == (beta.server_alive_interval + 3) * 1000
    assert pi.suspect_after_ms(alpha, main) == (11 + 3) * 1000  # the Pi's keepalive comes first
    assert pi.suspect_after_ms(beta, main) == (min(12, beta.server_alive_interval) + 3) * 1000
    variables = pi.context(alpha, main)
    assert variables["hang_after_ms"] == 49000 and variables["stale_after_ms"] == 14000
    assert variables["suspect_after_ms"] == 14000
    assert variables["forwards"] == [f.spec for f in pi.forwards(alpha.first_path)] and variables["key_path"] == pi_locations.key_path(alpha)
    assert (variables["vps_address"], variables["vps_port"], variables["vps_tunnel_user"]) == ("203.0.113.1", 22, "pitunnel")
    assert variables["tunnel_home"] == "/var/lib/pitunnel" and variables["tunnel_user"] == "pitunnel"
    assert (variables["server_alive_interval"], variables["server_alive_count_max"]) == (11, 3)
    assert variables["connect_timeout"] == D["tunnel_connect_timeout"] and variables["check_every"] == D["watchdog_every"]


def test_the_laptops_key_line_is_marked_as_pitunnels(inv: Inventory, bare: Inventory, keys: dict[str, str]) -> None:
    keytype, blob = keys["laptop"].split()[:2]
    assert pi.laptop_key_line(inv) == f"{keytype} {blob} pitunnel-laptop"  # its own comment is not sent
    assert pi.laptop_key_line(bare) is None


# ------------------------------------------------------------------------------------- what sshd has on


def test_penalties_are_on_only_when_sshd_lists_them() -> None:
    assert not pi_sshd.has_penalties("") and not pi_sshd.has_penalties("0\n") and pi_sshd.has_penalties("1\n")
    seen = pi_sshd.penalties_observer()
    assert seen.describe(True) == "yes" and seen.describe(False) == "no (older OpenSSH)"
    assert "persourcepenalties" in pi_sshd.PENALTIES.script


def test_passwords_are_read_as_a_tunnel_login_gets_them(inv: Inventory) -> None:
    script = pi_sshd.sshd_passwords_fact(inv.pis["alpha"]).script
    assert "sshd -T -C user=admin,host=localhost,addr=127.0.0.1 " in script


@pytest.mark.parametrize(("name", "sshd_t", "said"), [
    ("alpha", "passwordauthentication yes", "on, with a public ssh tunnel (see the WARNING)"),
    ("alpha", "", "on, with a public ssh tunnel (see the WARNING)"),  # unknown counts as maybe on
    ("alpha", "passwordauthentication no\nkbdinteractiveauthentication no", "off (sshd -T)"),
    ("beta", "passwordauthentication yes", "on, turned off once key login works (disable_password_login)"),
    ("beta", "passwordauthentication no", "off (sshd -T)"),
])
def test_what_the_run_says_of_password_login(inv: Inventory, name: str, sshd_t: str, said: str) -> None:
    assert pi_sshd.passwords_observer(inv.pis[name], [inv.vps["main"]]).describe(pi_sshd.sshd_passwords(sshd_t)) == said


def test_a_pi_without_a_public_ssh_tunnel_is_not_warned(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY.replace("public: true", "public: false").replace("laptop_key: keys/laptop",
                                                                                     "laptop_key: null"))
    seen = pi_sshd.passwords_observer(inv.pis["alpha"], [inv.vps["main"]])
    assert seen.describe(pi_sshd.sshd_passwords("passwordauthentication yes")) == "on (no public ssh tunnel)"
    assert seen.describe(pi_sshd.sshd_passwords("")) == "unknown (no public ssh tunnel)"


# -------------------------------------------------------------------------------------------- base's ops


def test_base_makes_the_account_the_key_and_the_laptops_login(inv: Inventory, bare: Inventory) -> None:
    ops, key = pi.base_ops(inv, inv.pis["alpha"])
    assert [type(op) for op in ops] == [Packages, SystemUser, KeyPair, Directory, File]
    assert ops[0].names == ("autossh",)  # type: ignore[attr-defined]
    user = ops[1]
    assert isinstance(user, SystemUser) and (user.name, user.home) == ("pitunnel", "/var/lib/pitunnel")
    assert key is ops[2] and (key.path, key.owner, key.comment) == (pi_locations.key_path(inv.pis["alpha"]), "pitunnel", "pitunnel:alpha")
    ssh_dir, auth = ops[3], ops[4]
    assert isinstance(ssh_dir, Directory) and (ssh_dir.path, ssh_dir.owner, ssh_dir.mode) == ("/home/admin/.ssh", "admin", 0o700)
    assert isinstance(auth, File) and auth.path == "/home/admin/.ssh/authorized_keys" and auth.mode == 0o600
    mine = FileState(True, "admin", "admin", 0o600, b"ssh-rsa AAAAmine me@desk\n")
    assert auth.wanted(mine) == f"ssh-rsa AAAAmine me@desk\n{pi.laptop_key_line(inv)}\n"  # the user's lines stay
    beta_ops, beta_key = pi.base_ops(inv, inv.pis["beta"])
    assert not any(isinstance(op, SystemUser) for op in beta_ops) and beta_key.owner == "pi"  # the login user's own
    assert [type(op) for op in pi.base_ops(bare, bare.pis["alpha"])[0]] == [Packages, SystemUser, KeyPair]


def test_a_bad_public_key_fails_its_pi_and_says_how_to_fix(inv: Inventory, keys: dict[str, str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, key = pi.base_ops(inv, inv.pis["alpha"])
    keytype, blob = keys["alpha"].split()[:2]
    assert pi.refuse_bad_pubkey(Reporter(colour=False), inv.pis["alpha"], key, f"{keytype} {blob} old comment").line \
        == f"{keytype} {blob}"
    with pytest.raises(StepFailed, match="bad public key"):
        pi.refuse_bad_pubkey(Reporter(colour=False), inv.pis["alpha"], key, "garbage")
    (line,) = lines(capsys)
    assert line.startswith(f"failed alpha tunnel key (made on the Pi) - {key.path}.pub is not a public key (")
    assert line.endswith(f"it is not sent to the VPS. Fix: on alpha, rm {key.path}.pub and rerun: provisioning "
                         "derives it again from the private key")


PENALTIES_ON = ("persourcepenalties", "1")
PASSWORDS_ON = ("passwordauthentication|kbdinteractiveauthentication", "passwordauthentication yes")
PASSWORDS_OFF = ("passwordauthentication|kbdinteractiveauthentication",
                 "passwordauthentication no\nkbdinteractiveauthentication no")


def pub_answer(inv: Inventory, name: str, line: str) -> tuple[str, str]:
    return pi_locations.key_path(inv.pis[name]), f"PUB {line}"


def test_base_offers_the_key_found_on_the_pi_and_its_listeners(inv: Inventory, keys: dict[str, str],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"alpha": FakeHost("alpha", [pub_answer(inv, "alpha", keys["alpha"]), PENALTIES_ON, PASSWORDS_ON]),
             "beta": FakeHost("beta", [pub_answer(inv, "beta", keys["beta"]), PASSWORDS_OFF])}
    found = pi.base(play_on(inv, hosts))  # type: ignore[arg-type]
    keytype, blob = keys["alpha"].split()[:2]
    assert found["alpha"] == pi.PiBase(PiOffer("alpha", parse_public_key(f"{keytype} {blob}"),
                                               (Listener(True, 20022), Listener(False, 20080))), True)
    assert [s.spec for s in found["alpha"].offer.listens] == ["0.0.0.0:20022", "127.0.0.1:20080"]
    assert found["beta"].offer.listens == (Listener(False, 20023),) and found["beta"].penalties is False
    assert not any("ssh-keygen" in body for body in hosts["alpha"].ops)  # a key there is kept
    assert not any(s.startswith("cat ") for s in hosts["alpha"].scripts)  # and not read a second time
    out = lines(capsys)
    warnings = [l for l in out if l.startswith("WARNING")]
    assert len(warnings) == 1 and "alpha's sshd is public at 203.0.113.1:20022 and accepts passwords" in warnings[0]
    assert "ok alpha sshd has per-source penalties - yes" in out
    assert "ok beta sshd password login (effective, via the tunnel) - off (sshd -T)" in out


def test_base_makes_a_missing_key_on_the_pi_and_reads_its_public_half(inv: Inventory, keys: dict[str, str]) -> None:
    host = FakeHost("beta", [(pi_locations.key_path(inv.pis["beta"]), "ABSENT")], [(".pub", keys["beta"] + "\n")])
    found = pi.base(play_on(inv, {"beta": host}, limit=frozenset({"beta"})))  # type: ignore[dict-item]
    assert host.applied("ssh-keygen -q -t ed25519 -N '' -C pitunnel:beta -f /home/pi/.ssh/pitunnel_ed25519")
    assert host.scripts[-1] == "cat /home/pi/.ssh/pitunnel_ed25519.pub"
    assert found["beta"].offer.pubkey == parse_public_key(keys["beta"])


def test_base_in_check_mode_makes_no_key_and_offers_none(inv: Inventory) -> None:
    host = FakeHost("beta", [(pi_locations.key_path(inv.pis["beta"]), "ABSENT")])
    found = pi.base(play_on(inv, {"beta": host}, check=True, limit=frozenset({"beta"})))  # type: ignore[dict-item]
    assert found["beta"].offer.pubkey is None and host.ops == [] and len(host.scripts) == 1


def test_a_pi_whose_public_key_is_garbage_fails_alone_before_anything_changes(
        inv: Inventory, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"alpha": FakeHost("alpha", [pub_answer(inv, "alpha", "not a key at all")]),
             "beta": FakeHost("beta", [pub_answer(inv, "beta", keys["beta"])])}
    play = play_on(inv, hosts)  # type: ignore[arg-type]
    found = pi.base(play)
    assert list(found) == ["beta"] and play.failed == {"alpha"}
    assert any(l.startswith("failed alpha tunnel key (made on the Pi) - ") for l in lines(capsys))
    assert hosts["alpha"].ops == [] and len(hosts["alpha"].scripts) == 1  # read, refused, nothing written
    assert hosts["beta"].ops  # the other Pi went on (autossh, the laptop's key)


# ------------------------------------------------------------------------------------ the tunnel, passwords


def test_the_tunnel_pins_the_vpss_keys_and_exempts_loopback_where_penalties_exist(inv: Inventory) -> None:
    hosts = {"alpha": FakeHost("alpha"), "beta": FakeHost("beta")}
    play = play_on(inv, hosts)  # type: ignore[arg-type]
    offer = PiOffer("alpha", None, ())
    assert pi.tunnel(play, hosts["alpha"], pi.PiBase(offer, True),  # type: ignore[arg-type]
                     {"main": ("ssh-ed25519 AAAAvps1", "ssh-rsa AAAAvps2")}).changed == {"main"}
    written = "\n".join(hosts["alpha"].ops)
    assert D["loopback_dropin"] in written and "systemctl start pitunnel@main.service" in written
    import base64
    pinned = base64.b64encode(b"203.0.113.1 ssh-ed25519 AAAAvps1\n203.0.113.1 ssh-rsa AAAAvps2\n").decode()
    assert pinned in written
    assert pi.tunnel(play, hosts["beta"], pi.PiBase(offer, False), {"main": ("ssh-ed25519 AAAAvps1",)}).changed  # type: ignore[arg-type]
    assert D["loopback_dropin"] not in "\n".join(hosts["beta"].ops)
    checked = FakeHost("alpha")
    assert pi.tunnel(play_on(inv, {"alpha": checked}, check=True), checked, pi.PiBase(offer, True),  # type: ignore[arg-type, dict-item]
                     {"main": ()}).changed == {"main"}
    assert checked.ops == []  # check mode: it would change, changes nothing


def test_tunnel_ops_retire_the_single_vps_units_and_the_old_watchdog_timer(inv: Inventory) -> None:
    ops = pi.tunnel_ops(inv, inv.pis["alpha"], inv.vps["main"], [])
    names = [getattr(op, "unit", getattr(op, "path", None)) for op in ops]
    system = "/etc/systemd/system"
    assert names == [D["legacy_unit"], D["legacy_watchdog_unit"], D["watchdog_timer"], f"{system}/{D['legacy_unit']}",
                     f"{system}/{D['legacy_watchdog_unit']}", f"{system}/{D['watchdog_timer']}", D["watchdog_path"],
                     "/etc/pitunnel/ssh_config", "/etc/pitunnel/known_hosts", "/etc/pitunnel", D["unit_path"],
                     f"{system}/{D['watchdog_unit']}", "/etc/pitunnel/main", "/etc/pitunnel/main/known_hosts",
                     "/etc/pitunnel/main/ssh_config", "pitunnel@main.service", pi_locations.watchdog_path("main"),
                     "pitunnel-watchdog@main.service"]
    assert all((op.enabled, op.running) == (False, False) for op in ops[:3])  # type: ignore[attr-defined]
    assert all(op.notify == ("daemon-reload",) for op in ops[3:6])  # type: ignore[attr-defined]
    assert ops[16].mode == 0o755  # type: ignore[attr-defined]  # the watchdog is a script
    assert ops[10].notify == ("restart tunnel main",)  # type: ignore[attr-defined]  # the template: every instance


def test_passwords_go_off_only_after_a_fresh_key_login(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    refused = FakeHost("beta", fresh_login=False)
    with pytest.raises(StepFailed, match="key login not proven"):
        pi.passwords_off(play_on(inv, {"beta": refused}), refused)  # type: ignore[arg-type, dict-item]
    assert refused.logins == [False] and refused.windows == [0] and refused.ops == []  # it works now, or it does not
    assert lines(capsys) == ["failed beta sshd: passwords off - key login is not proven, so password login stays on"]
    proven = FakeHost("beta")
    pi.passwords_off(play_on(inv, {"beta": proven}), proven)  # type: ignore[arg-type, dict-item]
    assert proven.applied(D["password_dropin"]) and proven.applied("systemctl reload ssh")
    assert proven.logins == [False, False]  # before, and the reload's proof: keys only
    checked = FakeHost("beta", fresh_login=False)
    pi.passwords_off(play_on(inv, {"beta": checked}, check=True), checked)  # type: ignore[arg-type, dict-item]
    assert checked.logins == [] and checked.ops == []


def test_the_password_dropin_turns_both_password_ways_off() -> None:
    (op,) = pi.password_ops()
    assert isinstance(op, File) and op.path == D["password_dropin"] and op.validate == "sshd -t"
    assert op.notify == ("reload sshd",)
    text = op.wanted(FileState(False))
    assert "PasswordAuthentication no\n" in text and "KbdInteractiveAuthentication no\n" in text


@pytest.mark.parametrize(("step", "password", "hint"), [
    ("tunnel", True, "a fresh login failed after changing sshd's settings"),
    ("passwords", False, "a fresh key login failed after turning passwords off"),
    ("teardown", True, "the password or key the inventory gives was refused"),
])
def test_each_steps_sshd_reload_is_proven_by_the_right_login(step: str, password: bool, hint: str) -> None:
    host = FakeHost("p")
    handlers = {h.name: h for h in pi.handlers(host, step, ("main", "spare"))}  # type: ignore[arg-type]
    for v in ("main", "spare"):  # one per VPS, each restarting only a running instance
        assert handlers[f"restart tunnel {v}"].commands == ["systemctl daemon-reload",
                                                            pi.restart_tunnel(f"pitunnel@{v}.service")]
        assert handlers[f"restart watchdog {v}"].commands == ["systemctl daemon-reload",
                                                              f"systemctl try-restart pitunnel-watchdog@{v}.service"]
    assert handlers["daemon-reload"].commands == ["systemctl daemon-reload"]
    sshd = handlers["reload sshd"]
    assert sshd.commands == ["sshd -t", "systemctl reload ssh"] and hint in sshd.verify_hint
    assert sshd.verify is not None and sshd.verify() and host.logins == [password]


FAKE_SYSTEMCTL = """#!/bin/sh
# a fake systemctl: logs its arguments; `try-restart` fails as often as the file `fails` says
echo "$*" >> "$(dirname "$0")/calls"
case "$1" in
  show) echo resources ;;
  try-restart|restart)
    left=$(cat "$(dirname "$0")/fails")
    if [ "$left" -gt 0 ]; then echo $((left - 1)) > "$(dirname "$0")/fails"; exit 1; fi ;;
esac
"""


def run_restart(tmp_path: Path, fails: int) -> tuple[int, list[str], str]:
    import os
    import subprocess

    fake = tmp_path / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(0o755)
    (tmp_path / "fails").write_text(f"{fails}\n")
    (tmp_path / "calls").write_text("")
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run(["sh", "-c", pi.restart_tunnel("pitunnel@main.service")], env=env,
                          capture_output=True, text=True, timeout=10)
    return done.returncode, (tmp_path / "calls").read_text().splitlines(), done.stderr


@pytest.mark.parametrize(("fails", "code", "calls"), [
    (0, 0, ["try-restart pitunnel@main.service"]),
    (1, 0, ["try-restart pitunnel@main.service", "show -p Result --value pitunnel@main.service",
            "restart pitunnel@main.service"]),
    (2, 1, ["try-restart pitunnel@main.service", "show -p Result --value pitunnel@main.service",
            "restart pitunnel@main.service"]),
])
def test_a_tunnel_restart_systemd_could_not_start_is_tried_once_more(tmp_path: Path, fails: int, code: int,
                                                                      calls: list[str]) -> None:
    """A start that systemd failed ("unavailable resources", seen once in CI) gets one more try a second
    later, saying why on stderr; a second failure fails the handler (its change is then rolled back)."""
    rc, seen, err = run_restart(tmp_path, fails)
    assert (rc, seen) == (code, calls)
    assert ("pitunnel@main.service did not start (systemd: resources); once more in 1s" in err) == (fails > 0)


def test_a_restart_under_our_own_connection_is_a_plain_try_restart_later() -> None:
    """Through its own tunnel the restart runs 2 s after the handler answered, as a transient unit: a plain
    try-restart (a shell line there is mangled by the next daemon-reload); the other VPS's tunnel is retried."""
    host = FakeHost("p")
    host.through_tunnel = True  # type: ignore[attr-defined]
    host.gateway_name = "main"  # type: ignore[attr-defined]
    assert pi.restart_command(host, "main") == [  # type: ignore[arg-type]
        "systemd-run --quiet --collect --on-active=2 --timer-property=AccuracySec=100ms "
        "systemctl try-restart pitunnel@main.service"]
    assert pi.restart_command(host, "spare") == [pi.restart_tunnel("pitunnel@spare.service")]  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ teardown


def paths(ops: list[object]) -> list[str]:
    return [op.path for op in ops if isinstance(op, (Absent, File))]


def test_teardown_removes_what_provisioning_made(inv: Inventory, bare: Inventory) -> None:
    alpha = pi.teardown_ops(inv, inv.pis["alpha"], purge=False)
    assert {"/etc/systemd/system/pitunnel@.service", "/etc/systemd/system/pitunnel-watchdog@.service", "/etc/pitunnel",
            "/usr/local/lib/pitunnel", "/etc/systemd/system/pitunnel.service",  # and the single-VPS units of before
            "/etc/systemd/system/pitunnel-watchdog.service", D["password_dropin"], D["loopback_dropin"]} <= set(paths(alpha))
    stopped = [op.unit for op in alpha if isinstance(op, Service)]
    assert stopped[:2] == ["pitunnel@main.service", "pitunnel-watchdog@main.service"]  # every path's instance first
    present = pi.teardown_ops(inv, inv.pis["alpha"], purge=False, present=("old",))  # and those found on the Pi
    assert "pitunnel@old.service" in [op.unit for op in present if isinstance(op, Service)]
    assert [op.name for op in alpha if isinstance(op, UserAbsent)] == ["pitunnel"]  # its own account goes, key and all
    assert not any(isinstance(op, PackagesAbsent) for op in alpha)  # autossh stays unless purged
    purged = pi.teardown_ops(inv, inv.pis["alpha"], purge=True)
    assert [op.names for op in purged if isinstance(op, PackagesAbsent)] == [("autossh",)]
    beta = pi.teardown_ops(inv, inv.pis["beta"], purge=False)
    assert not any(isinstance(op, UserAbsent) for op in beta)  # the login user stays: only the key goes
    assert {"/home/pi/.ssh/pitunnel_ed25519", "/home/pi/.ssh/pitunnel_ed25519.pub"} <= set(paths(beta))
    assert not any(isinstance(op, File) for op in beta)  # the laptop's key goes last, in a converge of its own
    laptop = pi.laptop_key_removal(inv.pis["beta"])
    assert isinstance(laptop, File) and laptop.notify == ("reload sshd",)
    own = FileState(True, "pi", "pi", 0o600, f"ssh-rsa AAAAmine me\n{pi.laptop_key_line(inv)}\n".encode())
    assert laptop.path == "/home/pi/.ssh/authorized_keys" and laptop.wanted(own) == "ssh-rsa AAAAmine me\n"
    units = [op for op in beta if getattr(op, "unit", None)]
    assert units and all(not op.enabled and not op.running for op in units)  # type: ignore[attr-defined]


def test_teardown_runs_on_the_selected_pis_only(inv: Inventory) -> None:
    hosts = {"alpha": FakeHost("alpha", [("is-enabled", "enabled\nactive")]), "beta": FakeHost("beta")}
    pi.teardown(play_on(inv, hosts, limit=frozenset({"alpha"})), purge=False)  # type: ignore[arg-type]
    assert hosts["beta"].scripts == [] and hosts["alpha"].applied("systemctl stop pitunnel@main.service")


def test_teardown_reads_the_pis_paths_with_its_facts_and_stops_those_the_inventory_no_longer_names(
        inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    gone = FakeHost("alpha")  # nothing of pitunnel's left: one read, nothing sent
    pi.teardown(play_on(inv, {"alpha": gone}, limit=frozenset({"alpha"})), purge=False)  # type: ignore[dict-item]
    assert gone.round_trips == 1 and gone.ops == []
    assert "ok alpha the Pi's paths (a folder per VPS) - none" in lines(capsys)
    old = FakeHost("alpha", [("-printf '%f", "main\nold\n"), (f"is-enabled {pi_locations.unit('old')}", "enabled\nactive")])
    pi.teardown(play_on(inv, {"alpha": old}, limit=frozenset({"alpha"})), purge=False)  # type: ignore[dict-item]
    assert old.applied("systemctl stop pitunnel@old.service") and not old.applied("pitunnel@main.service")
    assert old.round_trips == 3  # read, read again with the old path's facts, apply
    assert "ok alpha the Pi's paths (a folder per VPS) - main, old" in lines(capsys)


def test_teardown_of_a_provisioned_pi_says_what_it_removes_and_reloads_after(inv: Inventory,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    import base64
    line = pi.laptop_key_line(inv)
    auth = "admin:admin:600\n" + base64.b64encode(f"ssh-rsa AAAAmine me\n{line}\n".encode()).decode()
    account = "pitunnel:x:999:999:pitunnel reverse tunnel:/var/lib/pitunnel:/usr/sbin/nologin"
    host = FakeHost("alpha", [("is-enabled", "enabled\nactive"), ("[ -e ", "yes"), ("getent passwd pitunnel", account),
                              ("/users", "pitunnel"), ("authorized_keys", auth), ("dpkg-query", "autossh installed"),
                              ("/packages", "autossh")])
    host.credentials = Credentials(login_password="secret")  # another way in: the laptop's key may go
    pi.teardown(play_on(inv, {"alpha": host}, limit=frozenset({"alpha"})), purge=True)  # type: ignore[dict-item]
    in_order(lines(capsys), [
        "changed alpha main: service pitunnel@main.service stopped and disabled - disable, stop",
        "changed alpha main: service pitunnel-watchdog@main.service stopped and disabled - disable, stop",
        "changed alpha service pitunnel.service stopped and disabled - disable, stop",
        "changed alpha single-VPS watchdog stopped and disabled - disable, stop",
        "changed alpha old watchdog timer stopped and disabled - disable, stop",
        "changed alpha absent /etc/systemd/system/pitunnel-watchdog.timer - remove",
        "changed alpha absent /etc/systemd/system/pitunnel-watchdog@.service - remove",
        "changed alpha absent /usr/local/lib/pitunnel - remove",
        "changed alpha absent /etc/systemd/system/pitunnel@.service - remove",
        "changed alpha absent /etc/pitunnel - remove",
        "changed alpha absent /etc/ssh/sshd_config.d/10-pitunnel-no-passwords.conf - remove",
        "changed alpha absent /etc/ssh/sshd_config.d/10-pitunnel-loopback.conf - remove",
        "changed alpha user absent pitunnel - remove with its home",
        "changed alpha packages purged autossh - purge autossh",
        "changed alpha handler daemon-reload - ran once",
        "changed alpha handler reload sshd - ran once",
        "changed alpha laptop's key removed - content",  # last, on its own, with its own proven reload
        "changed alpha handler reload sshd - ran once"])
    for command in ("systemctl disable --quiet pitunnel@main.service", "systemctl stop pitunnel-watchdog@main.service",
                    "rm -rf /etc/pitunnel", "userdel --remove pitunnel", "apt-get purge", "systemctl reload ssh"):
        assert host.applied(command), command
    assert host.applied(base64.b64encode(b"ssh-rsa AAAAmine me\n").decode())  # the user's own key stays
    assert host.logins == [True, True]  # each reload proven by a password login: the laptop's key goes


def test_teardown_keeps_the_laptops_key_when_no_other_way_in_is_known(inv: Inventory,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import base64
    auth = "admin:admin:600\n" + base64.b64encode(f"ssh-rsa AAAAmine me\n{pi.laptop_key_line(inv)}\n".encode()).decode()
    host = FakeHost("alpha", [("is-enabled", "enabled\nactive"), ("authorized_keys", auth)])
    pi.teardown(play_on(inv, {"alpha": host}, limit=frozenset({"alpha"})), purge=False)  # type: ignore[dict-item]
    out = lines(capsys)
    assert not any("laptop's key removed" in l for l in out) and not host.applied("authorized_keys")
    assert any(l.startswith("WARNING alpha kept the laptop's key (the line marked pitunnel-laptop in ~admin/.ssh/"
                            "authorized_keys): it is the only login pitunnel knows to this Pi") for l in out), out


def test_the_tunnel_on_a_fresh_pi(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("alpha", [("stat -c '%F", "ABSENT")])
    play = play_on(inv, {"alpha": host})  # type: ignore[dict-item]
    assert pi.tunnel(play, host, pi.PiBase(PiOffer("alpha", None, ()), True),  # type: ignore[arg-type]
                     {"main": ("ssh-ed25519 AAAAvps",)}).changed == {"main"}
    in_order(lines(capsys), [
        "ok alpha single-VPS pitunnel.service retired - disabled, inactive",  # the old units first: their ports free
        "ok alpha old watchdog timer retired - disabled, inactive",
        "changed alpha directory /etc/pitunnel - create",
        "changed alpha systemd template unit pitunnel@.service - create",
        "changed alpha systemd template unit pitunnel-watchdog@.service - create",
        "changed alpha directory /etc/pitunnel/main - create",
        "changed alpha main: VPS host key pinned - create",
        "changed alpha main: tunnel ssh config (keepalives and forwards for this VPS only) - create",
        "changed alpha service pitunnel@main.service - enable, start",
        "changed alpha main: watchdog (network back, a hung tunnel ssh, quick ACKs to the VPS) - create",
        "changed alpha service pitunnel-watchdog@main.service - enable, start",
        "changed alpha sshd: no per-source penalties for tunnel traffic (loopback) - create",
        "ok alpha handler restart tunnel main - not needed: started after the change",
        "ok alpha handler restart watchdog main - not needed: started after the change",
        "changed alpha handler reload sshd - ran once"])
    assert mode_of(host, pi_locations.watchdog_path("main")) == "root:root 755"
    assert mode_of(host, "/etc/pitunnel/main/known_hosts") == "root:root 644"
    assert host.applied("sshd -t") and host.logins == [True]  # the loopback drop-in is validated and proven


def test_a_tunnel_already_as_wanted_changes_nothing_and_a_changed_config_restarts_it(
        inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.fake_hosts import converged
    alpha, main = inv.pis["alpha"], inv.vps["main"]
    ops = [*pi.tunnel_ops(inv, alpha, main, ["ssh-ed25519 AAAAvps"]), *pi.loopback_ops(alpha, penalties=True)]
    base = pi.PiBase(PiOffer("alpha", None, ()), True)
    same = FakeHost("alpha", converged(ops))
    assert not pi.tunnel(play_on(inv, {"alpha": same}), same, base, {"main": ("ssh-ed25519 AAAAvps",)}).changed  # type: ignore[arg-type, dict-item]
    # one read (the Pi's VPS folders with the other facts), nothing written
    assert len(same.scripts) == 1 and same.ops == []
    assert all(l.startswith("ok ") for l in lines(capsys))
    moved = FakeHost("alpha", converged(ops))  # the VPS has a new host key: the pin changes, the tunnel restarts
    assert pi.tunnel(play_on(inv, {"alpha": moved}), moved, base,  # type: ignore[arg-type, dict-item]
                     {"main": ("ssh-ed25519 AAAAnew",)}).changed == {"main"}
    assert lines(capsys)[-1] == "changed alpha handler restart tunnel main - ran once"
    assert moved.applied("systemctl try-restart pitunnel@main.service")
    assert not moved.applied("pitunnel-watchdog@main.service")


@pytest.mark.parametrize("check", [False, True])
def test_a_change_restarting_the_tunnel_the_run_rides_reconnects_through_the_new_tunnel_after_it(
        inv: Inventory, capsys: pytest.CaptureFixture[str], check: bool) -> None:
    """Reached through its tunnel to main, a new pin restarts that tunnel 2 s after its handler answered: the run
    says so and waits for the path to come back (3 s, then up to listen_wait_seconds); --check restarts nothing,
    so it neither says so nor waits."""
    from tests.unit.fake_hosts import converged
    alpha, main = inv.pis["alpha"], inv.vps["main"]
    ops = [*pi.tunnel_ops(inv, alpha, main, ["ssh-ed25519 AAAAvps"]), *pi.loopback_ops(alpha, penalties=True)]
    host = FakeHost("alpha", converged(ops))
    host.through_tunnel = True
    host.gateway_name = "main"  # type: ignore[attr-defined]
    restarts: list[tuple[float, float]] = []
    host.path_restarts = lambda after, within: restarts.append((after, within))  # type: ignore[attr-defined]
    play = play_on(inv, {"alpha": host}, check=check)  # type: ignore[dict-item]
    base = pi.PiBase(PiOffer("alpha", None, ()), True)
    assert pi.tunnel(play, host, base, {"main": ("ssh-ed25519 AAAAnew",)}).changed == {"main"}  # type: ignore[arg-type]
    said = [l for l in lines(capsys) if "reconnecting" in l]
    if check:
        assert restarts == [] and said == [] and host.ops == []
        return
    assert restarts == [(D["restart_under_us_after"] + 1, D["listen_wait_seconds"])] == [(3, 45)]
    assert said == ["alpha its tunnel restarts in 2s, and with it this connection: reconnecting through the new tunnel"]
    assert host.applied("systemd-run --quiet --collect --on-active=2 --timer-property=AccuracySec=100ms "
                        "systemctl try-restart pitunnel@main.service")


def test_a_path_to_a_vps_the_pi_no_longer_names_is_retired(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.fake_hosts import converged
    alpha, main = inv.pis["alpha"], inv.vps["main"]
    ops = [*pi.tunnel_ops(inv, alpha, main, ["ssh-ed25519 AAAAvps"]), *pi.loopback_ops(alpha, penalties=True)]
    running = [(f"is-enabled {u}", "enabled\nactive") for u in (pi_locations.unit("old"), pi_locations.watchdog_unit("old"))]
    there = [(f"-e {p} ]", "yes") for p in (pi_locations.vps_config_dir("old"), pi_locations.watchdog_path("old"))]
    host = FakeHost("alpha", [("-printf '%f", "main\nold\nNot-A-Name\n"), *running, *there, *converged(ops)])
    assert not pi.tunnel(play_on(inv, {"alpha": host}), host, pi.PiBase(PiOffer("alpha", None, ()), True),  # type: ignore[arg-type, dict-item]
                         {"main": ("ssh-ed25519 AAAAvps",)}).changed
    assert "ok alpha the Pi's paths (a folder per VPS) - main, old" in lines(capsys)
    for command in ("systemctl disable --quiet pitunnel@old.service", "systemctl disable --quiet pitunnel-watchdog@old.service",
                    f"rm -rf {pi_locations.vps_config_dir('old')}", f"rm -rf {pi_locations.watchdog_path('old')}"):
        assert host.applied(command), command
    assert not host.applied("pitunnel@main.service") and not host.applied("Not-A-Name")
    assert len(host.scripts) == 3  # read, read again with the retired path's facts, apply


def test_base_on_a_fresh_pi(inv: Inventory, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("alpha", [("stat -c '%F", "ABSENT"), (pi_locations.key_path(inv.pis["alpha"]), "ABSENT"), PENALTIES_ON,
                              PASSWORDS_OFF], [(".pub", keys["alpha"])])
    pi.base(play_on(inv, {"alpha": host}, limit=frozenset({"alpha"})))  # type: ignore[dict-item]
    in_order(lines(capsys), [
        "changed alpha packages autossh - install autossh (package lists stale: update first)",
        "changed alpha system user pitunnel - create",
        "changed alpha tunnel key (made on the Pi) - generate on the host",
        "changed alpha directory /home/admin/.ssh - create",
        "changed alpha laptop's key for passwordless login - create",
        "ok alpha sshd has per-source penalties - yes",
        "ok alpha sshd password login (effective, via the tunnel) - off (sshd -T)"])
    assert host.applied("useradd --system --user-group --create-home --home-dir /var/lib/pitunnel --shell "
                        "/usr/sbin/nologin --comment 'pitunnel reverse tunnel' pitunnel")
    assert host.applied("pitunnel_enter /home/admin/.ssh /home/admin/.ssh\nchown admin:admin . && chmod 700 .")
    assert mode_of(host, "/home/admin/.ssh/authorized_keys") == "admin:admin 600"
    assert pi_sshd.sshd_passwords_fact(inv.pis["alpha"]).key == "sshd-passwords-loopback"
    assert "grep -iE '^(passwordauthentication|kbdinteractiveauthentication) '" in \
        pi_sshd.sshd_passwords_fact(inv.pis["alpha"]).script


def test_passwords_on_reads_each_setting_by_its_first_word() -> None:
    assert pi_sshd.passwords_on("PasswordAuthentication No\nKbdInteractiveAuthentication YES") is True
    assert pi_sshd.passwords_on("passwordauthentication no\nsomething else entirely\n") is False  # three words: skipped
    assert pi_sshd.passwords_on("kbdinteractiveauthentication yes") is None  # the password setting unread


def test_the_warning_names_every_public_ssh_port(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY.replace("laptop_key: keys/laptop", "laptop_key: null").replace(
        "web: {type: http, local_port: 8080, remote_port: 20080, path: /alpha/}",
        "ssh2: {type: ssh, local_port: 2222, remote_port: 20021, public: true}"))
    warning = pi_sshd.password_warning(inv.pis["alpha"], [inv.vps["main"]], None)
    assert warning is not None and warning.startswith(
        "alpha's sshd is public at 203.0.113.1:20022, 203.0.113.1:20021 and may accept passwords (sshd -T could not be read)")


def test_a_new_key_whose_public_half_reads_back_wrong_fails_its_pi(inv: Inventory,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("beta", [(pi_locations.key_path(inv.pis["beta"]), "ABSENT")], [(".pub", "Permission denied\n")])
    play = play_on(inv, {"beta": host}, limit=frozenset({"beta"}))  # type: ignore[dict-item]
    assert pi.base(play) == {} and play.failed == {"beta"}
    assert any(l.startswith("failed beta tunnel key (made on the Pi) - /home/pi/.ssh/pitunnel_ed25519.pub is not a "
                            "public key") for l in lines(capsys))


@pytest.mark.parametrize(("path", "handler"), [
    ("/etc/systemd/system/pitunnel-watchdog.timer", "daemon-reload"),
    ("/etc/systemd/system/pitunnel-watchdog.service", "daemon-reload"),
    ("/etc/systemd/system/pitunnel.service", "daemon-reload"),
    ("/etc/ssh/sshd_config.d/10-pitunnel-no-passwords.conf", "reload sshd"),
    ("/etc/ssh/sshd_config.d/10-pitunnel-loopback.conf", "reload sshd"),
])
def test_teardown_reloads_what_each_removed_file_fed(bare: Inventory, path: str, handler: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    host = FakeHost("beta", [(f"[ -e {path} ]", "yes")])
    pi.teardown(play_on(bare, {"beta": host}, limit=frozenset({"beta"})), purge=False)  # type: ignore[dict-item]
    handlers = [l for l in lines(capsys) if " handler " in l]
    assert handlers == [f"changed beta handler {handler} - ran once"]


def test_taking_the_laptops_key_away_alone_reloads_sshd(inv: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    import base64
    auth = "pi:pi:600\n" + base64.b64encode(f"{pi.laptop_key_line(inv)}\n".encode()).decode()
    host = FakeHost("beta", [("authorized_keys", auth)])
    host.credentials = Credentials(login_password="secret")
    pi.teardown(play_on(inv, {"beta": host}, limit=frozenset({"beta"})), purge=False)  # type: ignore[dict-item]
    assert [l for l in lines(capsys) if " handler " in l] == ["changed beta handler reload sshd - ran once"]


def test_teardown_creates_no_authorized_keys_it_did_not_find(inv: Inventory) -> None:
    host = FakeHost("beta")
    host.credentials = Credentials(login_password="secret")  # another way in: the laptop's key's removal runs
    pi.teardown(play_on(inv, {"beta": host}, limit=frozenset({"beta"})), purge=False)  # type: ignore[dict-item]
    assert not host.applied("authorized_keys")



def undone(ops: list[object]) -> list[tuple[str, object, str, tuple[str, ...]]]:
    """Each teardown op as the run shows it: its kind (Later: left for the Pi to run), what, title, handlers."""
    from pitunnel.ops import Later
    seen = []
    for op in ops:
        inner = op.op if isinstance(op, Later) else op
        what = getattr(inner, "unit", None) or getattr(inner, "path", None) or getattr(inner, "name", None) or \
            getattr(inner, "names", None)
        seen.append((("Later " if isinstance(op, Later) else "") + type(inner).__name__, what, getattr(op, "title"),
                     tuple(getattr(inner, "notify", ()))))
    return seen


def test_teardown_away_from_home_leaves_the_riding_instance_and_the_account_for_last(inv: Inventory) -> None:
    """Reached through main's tunnel: that instance's unit, its unit file and the tunnel account go once the run
    has left (Later); everything else now, in this order, each with its handler."""
    assert undone(pi.teardown_ops(inv, inv.pis["alpha"], purge=False, present=("old",), riding="main")) == [
        ('Later Service', 'pitunnel@main.service', 'main: service pitunnel@main.service stopped and disabled', ()),
        ('Service', 'pitunnel-watchdog@main.service', 'main: service pitunnel-watchdog@main.service stopped and disabled', ()),
        ('Service', 'pitunnel@old.service', 'old: service pitunnel@old.service stopped and disabled', ()),
        ('Service', 'pitunnel-watchdog@old.service', 'old: service pitunnel-watchdog@old.service stopped and disabled', ()),
        ('Service', 'pitunnel.service', 'service pitunnel.service stopped and disabled', ()),
        ('Service', 'pitunnel-watchdog.service', 'single-VPS watchdog stopped and disabled', ()),
        ('Service', 'pitunnel-watchdog.timer', 'old watchdog timer stopped and disabled', ()),
        ('Absent', '/etc/systemd/system/pitunnel-watchdog.timer',
         'absent /etc/systemd/system/pitunnel-watchdog.timer', ('daemon-reload',)),
        ('Absent', '/etc/systemd/system/pitunnel-watchdog@.service',
         'absent /etc/systemd/system/pitunnel-watchdog@.service', ('daemon-reload',)),
        ('Absent', '/etc/systemd/system/pitunnel-watchdog.service',
         'absent /etc/systemd/system/pitunnel-watchdog.service', ('daemon-reload',)),
        ('Absent', '/etc/systemd/system/pitunnel.service', 'absent /etc/systemd/system/pitunnel.service', ('daemon-reload',)),
        ('Absent', '/usr/local/lib/pitunnel', 'absent /usr/local/lib/pitunnel', ()),
        ('Later Absent', '/etc/systemd/system/pitunnel@.service',
         'absent /etc/systemd/system/pitunnel@.service', ('daemon-reload',)),
        ('Absent', '/etc/pitunnel', 'absent /etc/pitunnel', ()),
        ('Absent', '/etc/ssh/sshd_config.d/10-pitunnel-no-passwords.conf',
         'absent /etc/ssh/sshd_config.d/10-pitunnel-no-passwords.conf', ('reload sshd',)),
        ('Absent', '/etc/ssh/sshd_config.d/10-pitunnel-loopback.conf',
         'absent /etc/ssh/sshd_config.d/10-pitunnel-loopback.conf', ('reload sshd',)),
        ('Later UserAbsent', 'pitunnel', 'user absent pitunnel', ()),
    ]


def test_teardown_of_a_pi_whose_login_user_holds_the_tunnel_removes_each_key_file(inv: Inventory) -> None:
    assert undone(pi.teardown_ops(inv, inv.pis["beta"], purge=True)) == [
        ('Service', 'pitunnel@main.service', 'main: service pitunnel@main.service stopped and disabled', ()),
        ('Service', 'pitunnel-watchdog@main.service', 'main: service pitunnel-watchdog@main.service stopped and disabled', ()),
        ('Service', 'pitunnel.service', 'service pitunnel.service stopped and disabled', ()),
        ('Service', 'pitunnel-watchdog.service', 'single-VPS watchdog stopped and disabled', ()),
        ('Service', 'pitunnel-watchdog.timer', 'old watchdog timer stopped and disabled', ()),
        ('Absent', '/etc/systemd/system/pitunnel-watchdog.timer',
         'absent /etc/systemd/system/pitunnel-watchdog.timer', ('daemon-reload',)),
        ('Absent', '/etc/systemd/system/pitunnel-watchdog@.service',
         'absent /etc/systemd/system/pitunnel-watchdog@.service', ('daemon-reload',)),
        ('Absent', '/etc/systemd/system/pitunnel-watchdog.service',
         'absent /etc/systemd/system/pitunnel-watchdog.service', ('daemon-reload',)),
        ('Absent', '/etc/systemd/system/pitunnel.service', 'absent /etc/systemd/system/pitunnel.service', ('daemon-reload',)),
        ('Absent', '/usr/local/lib/pitunnel', 'absent /usr/local/lib/pitunnel', ()),
        ('Absent', '/etc/systemd/system/pitunnel@.service', 'absent /etc/systemd/system/pitunnel@.service', ('daemon-reload',)),
        ('Absent', '/etc/pitunnel', 'absent /etc/pitunnel', ()),
        ('Absent', '/etc/ssh/sshd_config.d/10-pitunnel-no-passwords.conf',
         'absent /etc/ssh/sshd_config.d/10-pitunnel-no-passwords.conf', ('reload sshd',)),
        ('Absent', '/etc/ssh/sshd_config.d/10-pitunnel-loopback.conf',
         'absent /etc/ssh/sshd_config.d/10-pitunnel-loopback.conf', ('reload sshd',)),
        ('Absent', '/home/pi/.ssh/pitunnel_ed25519', 'absent /home/pi/.ssh/pitunnel_ed25519', ()),
        ('Absent', '/home/pi/.ssh/pitunnel_ed25519.pub', 'absent /home/pi/.ssh/pitunnel_ed25519.pub', ()),
        ('Absent', '/home/pi/.ssh/pitunnel_ed25519.next', 'absent /home/pi/.ssh/pitunnel_ed25519.next', ()),
        ('Absent', '/home/pi/.ssh/pitunnel_ed25519.next.pub', 'absent /home/pi/.ssh/pitunnel_ed25519.next.pub', ()),
        ('Absent', '/home/pi/.ssh/pitunnel_ed25519.old', 'absent /home/pi/.ssh/pitunnel_ed25519.old', ()),
        ('Absent', '/home/pi/.ssh/pitunnel_ed25519.old.pub', 'absent /home/pi/.ssh/pitunnel_ed25519.old.pub', ()),
        ('PackagesAbsent', ('autossh',), 'packages purged autossh', ()),
    ]


@pytest.mark.parametrize("check", [False, True])
def test_teardown_through_the_pis_own_tunnel_leaves_it_for_the_pi_to_stop_once_the_run_has_left(
        inv: Inventory, capsys: pytest.CaptureFixture[str], check: bool) -> None:
    host = FakeHost("alpha", [("is-enabled", "enabled\nactive"), ("[ -e ", "yes")])
    host.through_tunnel = True
    host.gateway_name = "main"  # type: ignore[attr-defined]  # Remote's: the VPS whose tunnel it came through
    pi.teardown(play_on(inv, {"alpha": host}, check=check, limit=frozenset({"alpha"})), purge=False)  # type: ignore[dict-item]
    out = lines(capsys)
    note = ("alpha reached through its tunnel to main, which stops 2s after this run leaves the Pi: pitunnel cannot "
            "watch that last step (`pitunnel status` shows the tunnel gone)")
    if check:
        assert host.ops == [] and not any(note in l for l in out)
        assert ("would change alpha main: service pitunnel@main.service stopped and disabled - disable, stop, once "
                "this run has left (its connection rides it)") in out
        return
    [armed] = [s for s in host.ops if "pitunnel-later.sh.armed" in s]
    [left] = [s for s in host.ops if "pitunnel@main.service" in s and s != armed]  # not stopped while the run rides it
    assert left.startswith("printf '%s' ") and left.endswith(" >> /run/pitunnel-later.sh")
    assert host.applied("systemctl stop pitunnel-watchdog@main.service")  # the watchdog goes now
    assert "systemctl reset-failed pitunnel@main.service || true" in armed and "--on-active=2 " in armed
    assert any(l.endswith(note) for l in out), out
    assert ("changed alpha main: service pitunnel@main.service stopped and disabled - disable, stop, once this run "
            "has left (its connection rides it)") in out
