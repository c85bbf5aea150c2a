"""roles/site.py across several paths and runs, on scripted hosts (tests/unit/fake_hosts.py): a Pi with two
VPSes (one that does not answer, listeners that differ per VPS), an enrolled Pi's bootstrap tunnel retired once
every VPS has its own key, a revocation ended by a new key, and teardown keeping the key of a Pi it could not
reach but through its own tunnel."""

from __future__ import annotations

import base64
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, Revoked, load_inventory
from pitunnel.inventory.revoked import read_revoked, revoked_file, write_revoked
from pitunnel.remote import Remote
from pitunnel.roles import site
from pitunnel.roles.contract import PiOffer, listens
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.pi import steps as pi_steps
from pitunnel.roles.vps import authorized as vps_authorized
from pitunnel.play import Play
from pitunnel.sshkeys import parse_public_key
from tests.unit.fake_hosts import ACCOUNT, FakeHost, lines, load, play_on
from tests.unit.test_site import INVENTORY, pi_host, vps_host, written
from tests.unit.test_templates import keygen

TWO = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main: {address: 203.0.113.1, port_range: [20000, 20009]}
  spare: {address: 203.0.113.2, port_range: [21000, 21009]}
pis:
  duo:
    address: 10.0.0.5
    vps: [main, spare]
    disable_password_login: false
    tunnels:
      ssh: {type: ssh, remote_port: auto}
  beta:
    address: 10.0.0.3
    vps: main
    disable_password_login: false
    tunnels:
      ssh: {type: ssh, remote_port: 20009}
"""
SS = {"main": "LISTEN 0 128 127.0.0.1:20000 0.0.0.0:*\nLISTEN 0 128 127.0.0.1:20009 0.0.0.0:*\n",
      "spare": "LISTEN 0 128 127.0.0.1:21000 0.0.0.0:*\n"}
EXPIRES = "20991231000000Z"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("keys")
    return {n: " ".join(keygen(base / n, f"made on {n}").split()[:2]) for n in ("duo", "beta", "boot", "alpha", "alpha2")}


@pytest.fixture()
def two(tmp_path: Path) -> Inventory:
    return load(tmp_path, TWO)


def keys_state(*found: str) -> str:
    text = "".join(line + "\n" for line in found)
    return f"pitunnel:pitunnel:600\n{base64.b64encode(text.encode()).decode()}"


def sent(host: FakeHost) -> list[str]:
    """Each authorized_keys written on `host`, in order."""
    return ["".join(base64.b64decode(b).decode() for b in re.findall(r"printf %s (\S+) \| base64 -d > new", body))
            for body in host.ops if "n=authorized_keys\n" in body]


def a_vps(inv: Inventory, name: str, *, permitted: str, boot: str | None = None, account: str = ACCOUNT) -> FakeHost:
    """A provisioned VPS of TWO; `boot`: the bootstrap key of duo (pitunnel enroll) still authorised there."""
    found = [vps_authorized.authorized_line(inv.vps[name], inv.pis["duo"].path(name), boot, expires=EXPIRES)] if boot else []
    return FakeHost(name, [("|| echo MISSING", account), ("ssh_host_", "cur ssh-ed25519 AAAAhostkey\n"),
                           ("ss -Htln", SS[name]), ("permitlisten", permitted), ("authorized_keys", keys_state(*found))],
                    [("ss -Htln", SS[name])])


def bases_of(inv: Inventory, keys: dict[str, str], *names: str) -> dict[str, pi_steps.PiBase]:
    return {n: pi_steps.PiBase(PiOffer(n, parse_public_key(keys[n]), listens(inv.pis[n].first_path)), False) for n in names}


@pytest.fixture()
def tunnels(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[str, ...]]]:
    """The Pi's own tunnel step (tested in test_roles_pi.py) recorded: which Pi, with which VPSes' host keys;
    nothing changed there, so the VPS's own reading of its listeners decides the wait."""
    calls: list[tuple[str, tuple[str, ...]]] = []

    def tunnel(play: Play, remote: Remote, base: pi_steps.PiBase, host_keys: dict[str, tuple[str, ...]]) -> pi_steps.Tunneled:
        calls.append((remote.name, tuple(sorted(host_keys))))
        return pi_steps.Tunneled(set(), None)

    monkeypatch.setattr(pi_steps, "tunnel", tunnel)
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    return calls


@pytest.fixture()
def retired(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Play, str]]:
    """The Pi's side of the bootstrap's retirement (tested in test_enroll_flow.py) recorded."""
    calls: list[tuple[Play, str]] = []
    monkeypatch.setattr(site.bootstrap, "retire", lambda play, remote: calls.append((play, remote.name)))
    return calls


def test_each_vps_is_offered_the_pis_listeners_of_its_own_path(two: Inventory, keys: dict[str, str],
                                                                tunnels: list[tuple[str, tuple[str, ...]]]) -> None:
    """duo's `auto` port is 20000 on main and 21000 on spare: spare permits (and is written) its own."""
    hosts = {"main": a_vps(two, "main", permitted="permitlisten 127.0.0.1:20000 127.0.0.1:20009"),
             "spare": a_vps(two, "spare", permitted="permitlisten 127.0.0.1:21000"), "duo": FakeHost("duo")}
    play = play_on(two, hosts, limit=frozenset({"duo"}))  # type: ignore[arg-type]
    site.connect(play, bases_of(two, keys, "duo"))
    assert play.failed == set() and tunnels == [("duo", ("main", "spare"))]
    (main,), (spare,) = sent(hosts["main"]), sent(hosts["spare"])
    assert 'permitlisten="127.0.0.1:20000"' in main and "21000" not in main
    assert 'permitlisten="127.0.0.1:21000"' in spare and "20000" not in spare


def test_a_path_whose_vps_did_not_answer_is_named_once_under_its_pi_and_the_others_go_on(
        two: Inventory, keys: dict[str, str], tunnels: list[tuple[str, tuple[str, ...]]],
        capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"main": a_vps(two, "main", permitted="permitlisten 127.0.0.1:*"),
             "spare": a_vps(two, "spare", permitted="permitlisten 127.0.0.1:*", account="MISSING"),
             "duo": FakeHost("duo"), "beta": FakeHost("beta")}
    play = play_on(two, hosts)  # type: ignore[arg-type]
    site.connect(play, bases_of(two, keys, "duo", "beta"))
    assert play.failed == {"spare"}
    assert sorted(tunnels) == [("beta", ("main",)), ("duo", ("main",))]  # duo's path via main is up all the same
    out = lines(capsys)
    assert "skipped duo tunnel via spare - its VPS spare step failed" in out
    assert "ok duo tunnel listening on the VPS - main: 127.0.0.1:20000" in out
    assert play.reporter.warnings == [("duo", site.missing_path(two.pis["duo"], "spare"))]  # beta has one VPS: no warning
    assert site.missing_path(two.pis["duo"], "spare") == (
        "path duo via spare is missing: VPS spare did not answer; the other paths are up. Rerun provision (or "
        "provision-pi) once spare is back to complete it")


def test_an_enrolled_pi_retires_its_bootstrap_once_every_vps_took_its_own_key_then_each_vps_drops_the_bootstrap_key(
        two: Inventory, keys: dict[str, str], tunnels: list[tuple[str, tuple[str, ...]]],
        retired: list[tuple[Play, str]]) -> None:
    hosts = {v: a_vps(two, v, permitted="permitlisten 127.0.0.1:*", boot=keys["boot"]) for v in ("main", "spare")}
    hosts |= {"duo": FakeHost("duo"), "beta": FakeHost("beta")}
    play = play_on(two, hosts)  # type: ignore[arg-type]
    site.connect(play, bases_of(two, keys, "duo", "beta"))
    assert play.failed == set() and play.reporter.warnings == []
    assert retired == [(play, "duo")]  # beta has no bootstrap: nothing to retire on it
    for v in ("main", "spare"):
        first, then = sent(hosts[v])  # duo's own key beside its bootstrap key, then the bootstrap key off
        assert f"{keys['duo']} pitunnel:duo" in first and f"{keys['boot']} pitunnel-bootstrap:duo" in first
        assert "pitunnel-bootstrap:duo" not in then and keys["boot"] not in then


def test_a_bootstrap_stays_while_one_of_the_pis_vpses_has_not_its_own_key(
        two: Inventory, keys: dict[str, str], tunnels: list[tuple[str, tuple[str, ...]]],
        retired: list[tuple[Play, str]]) -> None:
    hosts = {"main": a_vps(two, "main", permitted="permitlisten 127.0.0.1:*", boot=keys["boot"]),
             "spare": a_vps(two, "spare", permitted="permitlisten 127.0.0.1:*", boot=keys["boot"], account="MISSING"),
             "duo": FakeHost("duo")}
    play = play_on(two, hosts, limit=frozenset({"duo"}))  # type: ignore[arg-type]
    site.connect(play, bases_of(two, keys, "duo"))
    assert retired == [] and len(sent(hosts["main"])) == 1 and "pitunnel-bootstrap:duo" in sent(hosts["main"])[0]
    assert play.reporter.warnings == [
        ("duo", "its bootstrap tunnel stays until every one of its VPSes has its own key: rerun provision-pi once "
                "they answer"),
        ("duo", site.missing_path(two.pis["duo"], "spare"))]


def test_provision_keeps_a_pis_failure_beside_the_vpses(inv_one: Inventory, keys: dict[str, str]) -> None:
    """The VPS converges, then its Pi's key step fails there: the run ends failed for it."""
    main = vps_host(account="MISSING")
    main.answers.insert(0, ("dpkg-query", "nginx installed\nautossh installed"))
    hosts = {"main": main, "beta": pi_host(inv_one, "beta", keys["beta"])}
    play = play_on(inv_one, hosts, limit=frozenset({"main", "beta"}))  # type: ignore[arg-type]
    site.provision(play)
    assert play.failed == {"main"} and play.finish() != 0


@pytest.fixture()
def inv_one(tmp_path: Path) -> Inventory:
    return load(tmp_path, INVENTORY)


def record(inv_path: Path, keys: dict[str, str]) -> None:
    write_revoked(revoked_file(inv_path), {"alpha": Revoked("alpha", "2026-12-06T05:00:00Z",
                                                            (parse_public_key(keys["alpha"]),), {"main": {"ssh": 20022}})})


def reinstated(tmp_path: Path, keys: dict[str, str]) -> Inventory:
    load(tmp_path, INVENTORY)
    record(tmp_path / "hosts.yml", keys)
    return load_inventory(tmp_path / "hosts.yml", reinstate=frozenset({"alpha"}))  # provision-pi --limit alpha


def test_a_revoked_key_offered_again_fails_its_pi_alone_and_is_never_offered_to_the_vps(
        tmp_path: Path, keys: dict[str, str], tunnels: list[tuple[str, tuple[str, ...]]]) -> None:
    """alpha's public listener is not permitted on main (yet): it is not offered, so main and beta go on."""
    inv = reinstated(tmp_path, keys)
    hosts = {"main": vps_host(permitted="permitlisten 127.0.0.1:*"), "alpha": FakeHost("alpha"), "beta": FakeHost("beta")}
    play = play_on(inv, hosts, limit=frozenset({"alpha", "beta"}))  # type: ignore[arg-type]
    site.connect(play, bases_of(inv, keys, "alpha", "beta"))
    assert play.failed == {"alpha"} and hosts["alpha"].scripts == []  # its tunnel is never started
    assert tunnels == [("beta", ("main",))]
    (text,) = sent(hosts["main"])
    assert f"{keys['beta']} pitunnel:beta" in text and keys["alpha"] not in text


def test_a_new_key_ends_the_revocation_at_the_time_it_did_in_utc(tmp_path: Path, keys: dict[str, str],
                                                                 tunnels: list[tuple[str, tuple[str, ...]]],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pi_steps, "passwords_off", lambda play, remote, known=None: None)
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # the laptop's own zone is not UTC: the record is UTC all the same
    time.tzset()
    try:
        inv = reinstated(tmp_path, keys)
        play = play_on(inv, {"main": vps_host(), "alpha": FakeHost("alpha")}, limit=frozenset({"alpha"}))  # type: ignore[arg-type]
        before = datetime.now(timezone.utc).replace(microsecond=0)
        site.connect(play, {"alpha": bases_of(inv, {**keys, "alpha": keys["alpha2"]}, "alpha")["alpha"]})
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    ended = read_revoked(revoked_file(inv.path))[0]["alpha"].ended
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", ended), ended
    at = datetime.strptime(ended, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before <= at <= before + timedelta(seconds=30)
    assert ("changed alpha revoked state ended - its new key is authorised (its old ones stay refused, in "
            "hosts.revoked.yml): run provision-vps for its routes") in lines(capsys)


def test_check_mode_says_the_revocation_would_end_and_leaves_the_record(tmp_path: Path, keys: dict[str, str],
                                                                         tunnels: list[tuple[str, tuple[str, ...]]],
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    inv = reinstated(tmp_path, keys)
    text = revoked_file(inv.path).read_text()
    play = play_on(inv, {"main": vps_host(), "alpha": FakeHost("alpha")}, check=True, limit=frozenset({"alpha"}))  # type: ignore[arg-type]
    site.connect(play, {"alpha": bases_of(inv, {**keys, "alpha": keys["alpha2"]}, "alpha")["alpha"]})
    assert revoked_file(inv.path).read_text() == text
    assert ("would change alpha revoked state ended - its new key is authorised (its old ones stay refused, in "
            "hosts.revoked.yml): run provision-vps for its routes") in lines(capsys)


def test_a_run_that_ends_no_revocation_leaves_the_revoked_file_as_it_was(tmp_path: Path, keys: dict[str, str],
                                                                         tunnels: list[tuple[str, tuple[str, ...]]]) -> None:
    inv = reinstated(tmp_path, keys)  # alpha is revoked, and beta provisioned
    file = revoked_file(inv.path)
    os.utime(file, (1_000_000, 1_000_000))
    play = play_on(inv, {"main": vps_host(), "beta": FakeHost("beta")}, limit=frozenset({"beta"}))  # type: ignore[arg-type]
    site.connect(play, bases_of(inv, keys, "beta"))
    assert play.failed == set() and file.stat().st_mtime == 1_000_000


def authorised_main(inv: Inventory, keys: dict[str, str]) -> tuple[FakeHost, str]:
    text = vps_authorized.authorized_keys(inv, inv.vps["main"], {n: keys[n] for n in ("alpha", "beta")}).wanted(FileState(False))
    main = vps_host()
    main.answers.insert(0, ("authorized_keys", "pitunnel:pitunnel:600\n" + base64.b64encode(text.encode()).decode()))
    return main, text


@pytest.mark.parametrize("through_tunnel", [False, True])
def test_teardown_of_a_pi_that_failed_keeps_its_key_only_when_reached_through_its_own_tunnel(
        inv_one: Inventory, keys: dict[str, str], through_tunnel: bool) -> None:
    main, text = authorised_main(inv_one, keys)
    alpha = FakeHost("alpha", [("systemctl is-enabled", "enabled\nactive")], fail_on="systemctl")
    alpha.through_tunnel = through_tunnel
    play = play_on(inv_one, {"main": main, "alpha": alpha, "beta": FakeHost("beta")}, limit=frozenset({"alpha"}))  # type: ignore[arg-type]
    site.teardown(play, purge=False)
    assert play.failed == {"alpha"}
    after = vps_authorized.authorized_keys(inv_one, inv_one.vps["main"], {}, drop=frozenset({"alpha"})).wanted(
        FileState(True, content=text.encode()))
    assert written(main, "authorized_keys", after) is not through_tunnel  # the only way in stays open
    if through_tunnel:
        assert not any("authorized_keys" in body for body in main.ops)


def test_teardown_takes_the_key_of_a_pi_reached_through_its_tunnel_that_went_well(inv_one: Inventory,
                                                                                   keys: dict[str, str]) -> None:
    main, text = authorised_main(inv_one, keys)
    alpha = FakeHost("alpha")
    alpha.through_tunnel = True
    play = play_on(inv_one, {"main": main, "alpha": alpha, "beta": FakeHost("beta")}, limit=frozenset({"alpha"}))  # type: ignore[arg-type]
    site.teardown(play, purge=False)
    assert play.failed == set()
    after = vps_authorized.authorized_keys(inv_one, inv_one.vps["main"], {}, drop=frozenset({"alpha"})).wanted(
        FileState(True, content=text.encode()))
    assert "pitunnel:alpha" not in after and written(main, "authorized_keys", after)


def test_the_wait_for_listeners_ends_at_the_first_reading_that_has_them_and_says_it_is_waiting(
        inv_one: Inventory, capsys: pytest.CaptureFixture[str]) -> None:
    from pitunnel.shared import SharedReading
    seen = [frozenset(), frozenset({"0.0.0.0:20022", "127.0.0.1:20080"})]
    play = play_on(inv_one, {})
    play.reporter.heartbeat_after = 0  # the line a slow wait prints, at once
    site.wait_listening(play, inv_one.pis["alpha"].first_path, SharedReading(lambda: seen.pop(0) if len(seen) > 1 else seen[0]),
                        frozenset())
    out = lines(capsys)
    assert "running alpha tunnel listening on the VPS (0s)" in out, out
    (done,) = [l for l in out if l.startswith("ok ")]
    assert re.fullmatch(r"ok alpha tunnel listening on the VPS - main: 0\.0\.0\.0:20022, 127\.0\.0\.1:20080 "
                        r"\(after (0\.[4-9]|1\.\d)s\)", done), done
