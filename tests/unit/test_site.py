"""roles/site.py without hosts: the order across hosts and what crosses between them (the Pis' keys and
listeners to their VPS, the VPS's host keys back), what a failure on one host does to the others, and check
mode; on scripted hosts (tests/unit/fake_hosts.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, Listener
from pitunnel.roles import site
from pitunnel.sshkeys import PublicKey, parse_public_key
from pitunnel.roles.contract import PiOffer, VpsFacts, listens
from pitunnel.roles.pi import locations as pi_locations
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.pi import steps as pi_steps
from pitunnel.roles.probes.status import status
from pitunnel.roles.probes.verify import verify
from pitunnel.roles.vps import authorized as vps_authorized
from pitunnel.roles.vps import role as vps_role
from tests.unit.fake_hosts import ACCOUNT, FakeHost, lines, load, play_on, sessions_holding
from tests.unit.test_templates import keygen

INVENTORY = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main: {address: 203.0.113.1}
  spare: {address: 203.0.113.2}
pis:
  alpha:
    address: 10.0.0.2
    vps: main
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
  gamma:
    address: 10.0.0.4
    vps: spare
    tunnels:
      ssh: {type: ssh, remote_port: 20024}
"""

ALL_LISTENERS = "LISTEN 0 128 0.0.0.0:20022 0.0.0.0:*\nLISTEN 0 128 127.0.0.1:20080 0.0.0.0:*\n" \
                "LISTEN 0 128 127.0.0.1:20023 0.0.0.0:*\nLISTEN 0 128 127.0.0.1:20024 0.0.0.0:*\n"
PERMITTED = "permitlisten 0.0.0.0:20022 127.0.0.1:20080 127.0.0.1:20023 127.0.0.1:20024"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("keys")
    return {n: keygen(base / n, f"made on {n}") for n in ("alpha", "beta", "gamma")}


@pytest.fixture()
def inv(tmp_path: Path) -> Inventory:
    return load(tmp_path, INVENTORY)


def vps_host(name: str = "main", *, account: str = ACCOUNT, permitted: str = PERMITTED, ss: str = ALL_LISTENERS,
             journal: list[str] | None = None) -> FakeHost:
    return FakeHost(name, [("|| echo MISSING", account), ("ssh_host_", "cur ssh-ed25519 AAAAhostkey\n"),
                           ("ss -Htln", ss), ("permitlisten", permitted), ("authorized_keys", "ABSENT")],
                    [("ss -Htln", ss)], journal=journal)


def pi_host(inv: Inventory, name: str, pub: str | None, journal: list[str] | None = None) -> FakeHost:
    key = pi_locations.key_path(inv.pis[name])
    return FakeHost(name, [(key, f"PUB {pub}" if pub else "ABSENT"),
                           ("passwordauthentication|kbd", "passwordauthentication no")], journal=journal)


def changes(host: FakeHost) -> list[str]:
    """What `host` was sent other than reads."""
    return list(host.ops)


def offer_key(key: str) -> PublicKey:
    return parse_public_key(key)


def written(host: FakeHost, path: str, content: str) -> bool:
    """Did an op on `host` write `content` to `path` (File ops send the content base64-encoded)?"""
    blob = base64.b64encode(content.encode()).decode()
    return any(blob in body and path.rsplit("/", 1)[-1] in body for body in host.ops)


def test_provision_pi_puts_the_keys_on_the_vps_before_the_tunnels_and_proves_them_listening(
        inv: Inventory, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    journal: list[str] = []
    hosts = {"main": vps_host(journal=journal), "alpha": pi_host(inv, "alpha", keys["alpha"], journal),
             "beta": pi_host(inv, "beta", keys["beta"], journal)}
    play = play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"}))  # type: ignore[arg-type]
    site.provision_pi(play)
    assert play.failed == set()
    vps = inv.vps["main"]
    wanted = vps_authorized.authorized_keys(inv, vps, {"alpha": " ".join(keys["alpha"].split()[:2]),
                                                  "beta": " ".join(keys["beta"].split()[:2])}).wanted(FileState(False))
    assert "pitunnel:alpha" in wanted and "pitunnel:beta" in wanted
    assert written(hosts["main"], "authorized_keys", wanted)
    for name in ("alpha", "beta"):  # each Pi pins the host key its VPS told
        assert written(hosts[name], "known_hosts", "203.0.113.1 ssh-ed25519 AAAAhostkey\n")
    vps_keys = journal.index("main apply")
    assert all(journal.index(f"{p} apply") < vps_keys for p in ("alpha", "beta"))  # base (autossh) first
    tunnels = [i for i, e in enumerate(journal) if e.startswith(("alpha", "beta"))][2:]
    assert max(i for i, e in enumerate(journal) if e == "main apply") < max(tunnels)
    assert hosts["beta"].applied(pi_role.PI_DEFAULTS["password_dropin"])  # beta's inventory turns passwords off
    assert not hosts["alpha"].applied(pi_role.PI_DEFAULTS["password_dropin"])
    out = lines(capsys)
    assert any(l.startswith("ok alpha tunnel listening on the VPS - main: 0.0.0.0:20022, 127.0.0.1:20080 (after ") for l in out)
    assert any(l.startswith("ok beta tunnel listening on the VPS - main: 127.0.0.1:20023") for l in out)
    assert "changed main authorized keys of the Pis - create" in out


def test_when_the_vps_step_fails_its_pis_tunnels_are_skipped(inv: Inventory, keys: dict[str, str],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"main": vps_host(account="MISSING"), "alpha": pi_host(inv, "alpha", keys["alpha"]),
             "beta": pi_host(inv, "beta", keys["beta"])}
    play = play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"}))  # type: ignore[arg-type]
    site.provision_pi(play)
    assert play.failed == {"main"}
    out = lines(capsys)
    assert "failed main tunnel account - pitunnel does not exist: run `invoke provision-vps` first" in out
    assert "skipped alpha tunnel via main - its VPS main step failed" in out and "skipped beta tunnel via main - its VPS main step failed" in out
    assert not any("known_hosts" in body for body in hosts["alpha"].ops)  # no tunnel without the VPS's keys


def test_permitlisten_behind_the_inventory_fails_the_vps_and_names_the_listener(
        inv: Inventory, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"main": vps_host(permitted="permitlisten 0.0.0.0:20022 127.0.0.1:20080"),
             "alpha": pi_host(inv, "alpha", keys["alpha"]), "beta": pi_host(inv, "beta", keys["beta"])}
    play = play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"}))  # type: ignore[arg-type]
    site.provision_pi(play)
    assert play.failed == {"main"}
    assert ("failed main sshd permits the Pis' listeners - not yet: beta: 127.0.0.1:20023; run `invoke provision-vps` "
            "(or `invoke provision`) first") in lines(capsys)
    assert not any("authorized_keys" in body for body in hosts["main"].ops)


def test_a_new_pi_needs_no_provision_vps_first_once_sshd_permits_its_addresses(
        inv: Inventory, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    """PermitListen as pitunnel writes it now (any port on each address in use): beta's loopback listener is
    permitted, alpha's public one only once a public tunnel was there when provision-vps ran."""
    hosts = {"main": vps_host(permitted='permitlisten 127.0.0.1:*'), "alpha": pi_host(inv, "alpha", keys["alpha"]),
             "beta": pi_host(inv, "beta", keys["beta"])}
    site.provision_pi(play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"})))  # type: ignore[arg-type]
    assert ("failed main sshd permits the Pis' listeners - not yet: alpha: 0.0.0.0:20022; run `invoke provision-vps` "
            "(or `invoke provision`) first") in lines(capsys)


def test_check_mode_plans_every_pi_even_without_a_key_or_an_account_and_changes_nothing(
        inv: Inventory, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"main": vps_host(account="MISSING", permitted=""), "alpha": pi_host(inv, "alpha", None),
             "beta": pi_host(inv, "beta", keys["beta"])}
    play = play_on(inv, hosts, check=True, limit=frozenset({"main", "alpha", "beta"}))  # type: ignore[arg-type]
    site.provision_pi(play)
    assert play.failed == set() and all(changes(h) == [] and h.logins == [] for h in hosts.values())
    out = lines(capsys)
    assert "skipped main authorized keys of the Pis - pitunnel is not there yet (provision-vps would create it)" in out
    assert "would change alpha systemd template unit pitunnel@.service - create" in out  # alpha has no key yet, still planned
    assert "would change beta sshd: passwords off - create" in out
    assert not any("listening on the VPS" in l for l in out)  # nothing to wait for in check mode


def test_permitlisten_behind_in_check_mode_is_a_skip_not_a_failure(inv: Inventory, keys: dict[str, str],
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"main": vps_host(permitted="permitlisten none"), "beta": pi_host(inv, "beta", keys["beta"])}
    play = play_on(inv, hosts, check=True, limit=frozenset({"main", "beta"}))  # type: ignore[arg-type]
    site.provision_pi(play)
    assert play.failed == set()
    assert any(l.startswith("skipped main sshd permits the Pis' listeners - not yet: beta: 127.0.0.1:20023")
               for l in lines(capsys))


def test_connect_tunnels_only_the_pis_that_have_a_key(inv: Inventory, keys: dict[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    hosts = {"main": vps_host(), "alpha": FakeHost("alpha"), "beta": FakeHost("beta")}
    play = play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"}))  # type: ignore[arg-type]
    bases = {"alpha": pi_steps.PiBase(PiOffer("alpha", None, listens(inv.pis["alpha"].first_path)), False),
             "beta": pi_steps.PiBase(PiOffer("beta", offer_key(keys["beta"]), listens(inv.pis["beta"].first_path)), False)}
    site.connect(play, bases)
    assert hosts["alpha"].scripts == [] and hosts["beta"].applied("pitunnel@main.service")
    keys_file = "\n".join(b for b in hosts["main"].ops if "authorized_keys" in b)
    assert keys_file  # beta's key went to the VPS; alpha had none to give


def test_a_pi_offering_another_pis_key_is_refused_alone_and_the_pi_it_belongs_to_keeps_working(
        inv: Inventory, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 22: alpha's root wrote beta's public key into alpha's .pub. beta's key is beta's on main already:
    alpha is refused (its line and its tunnel left as they were), beta's tunnel goes on, the run fails."""
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    vps = inv.vps["main"]
    before = vps_authorized.authorized_keys(inv, vps, {"alpha": keys["alpha"], "beta": keys["beta"]}).wanted(FileState(False))
    main = vps_host()
    main.answers.insert(0, ("authorized_keys", f"pitunnel:pitunnel:600\n{base64.b64encode(before.encode()).decode()}"))
    hosts = {"main": main, "alpha": pi_host(inv, "alpha", keys["beta"]), "beta": pi_host(inv, "beta", keys["beta"])}
    play = play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"}))  # type: ignore[arg-type]
    site.provision_pi(play)
    assert not any("authorized_keys" in body for body in main.ops)  # nothing written: each keeps its own line
    assert hosts["beta"].applied("pitunnel@main.service") and not hosts["alpha"].applied("pitunnel@main.service")
    out = lines(capsys)
    refused = [line for line in out if line.startswith("failed alpha tunnel key on main")]
    assert len(refused) == 1 and "is beta's (authorised for beta on main first)" in refused[0], out
    assert any(line.startswith("ok beta tunnel listening on the VPS - main: 127.0.0.1:20023") for line in out)
    assert play.finish() == 2


def test_an_unchanged_tunnel_already_listening_is_not_waited_for(inv: Inventory, keys: dict[str, str],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(pi_steps, "tunnel", lambda play, remote, base, host_keys: pi_steps.Tunneled(set(), None))  # no path changed
    hosts = {"main": vps_host(), "beta": FakeHost("beta")}
    play = play_on(inv, hosts, limit=frozenset({"main", "beta"}))  # type: ignore[arg-type]
    monkeypatch.setattr(pi_steps, "passwords_off", lambda play, remote, known=None: None)
    site.connect(play, {"beta": pi_steps.PiBase(PiOffer("beta", offer_key(keys["beta"]), (Listener(False, 20023),)), False)})
    assert "ok beta tunnel listening on the VPS - main: 127.0.0.1:20023" in lines(capsys)
    assert not any(s == "ss -Htln" for s in hosts["main"].scripts)  # the VPS's own reading sufficed


def test_provision_converges_the_vps_and_the_pis_base_then_connects_them(inv: Inventory, keys: dict[str, str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    main = vps_host()
    main.answers.insert(0, ("dpkg-query", "nginx installed\nautossh installed"))
    hosts = {"main": main, "beta": pi_host(inv, "beta", keys["beta"])}
    play = play_on(inv, hosts, limit=frozenset({"main", "beta"}))  # type: ignore[arg-type]
    site.provision(play)
    assert play.failed == set()
    beta = vps_authorized.authorized_keys(inv, inv.vps["main"], {"beta": " ".join(keys["beta"].split()[:2])})
    assert main.applied(vps_role.VPS_DEFAULTS["sshd_dropin"]) and written(main, "authorized_keys", beta.wanted(FileState(False)))
    assert hosts["beta"].applied("systemctl start pitunnel@main.service")


def test_a_provision_that_changes_nothing_costs_each_host_two_round_trips(inv: Inventory, keys: dict[str, str],
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from pitunnel.roles.vps import steps as vps_steps
    from tests.unit.fake_hosts import converged
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    main, alpha = inv.vps["main"], inv.pis["alpha"]
    offered = vps_authorized.keys_ops(inv, main, {"alpha": " ".join(keys["alpha"].split()[:2])})
    vps = FakeHost("main", [*converged([*offered, vps_steps.packages(main), *vps_steps.converge_ops(inv, main)]),
                            ("|| echo MISSING", ACCOUNT), ("ssh_host_", "cur ssh-ed25519 AAAAhostkey root@main\n"),
                            ("ss -Htln", ALL_LISTENERS), ("permitlisten", PERMITTED)])
    base, _ = pi_steps.base_ops(inv, alpha)
    pi = FakeHost("alpha", [(pi_locations.key_path(alpha), f"PUB {keys['alpha']}"), ("-printf '%f", "main\n"),
                            ("passwordauthentication|kbd", "passwordauthentication no"),
                            *converged([*base, *pi_steps.tunnel_ops(inv, alpha, main, ["ssh-ed25519 AAAAhostkey"])])])
    play = play_on(inv, {"main": vps, "alpha": pi}, limit=frozenset({"main", "alpha"}))
    site.provision(play)
    assert play.failed == set() and vps.ops == [] and pi.ops == []
    # the VPS: one read for its converge, one for the Pis' keys; the Pi: one for its base, one for its tunnel
    assert (vps.round_trips, pi.round_trips) == (2, 2)


def test_a_pi_with_passwords_off_that_changes_nothing_costs_two_round_trips_too(
        inv: Inventory, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The passwords step reuses what the tunnel step read when nothing changed in between: no third read."""
    from pitunnel.roles.vps import steps as vps_steps
    from tests.unit.fake_hosts import converged
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    main, beta = inv.vps["main"], inv.pis["beta"]
    offered = vps_authorized.keys_ops(inv, main, {"beta": " ".join(keys["beta"].split()[:2])})
    vps = FakeHost("main", [*converged([*offered, vps_steps.packages(main), *vps_steps.converge_ops(inv, main)]),
                            ("|| echo MISSING", ACCOUNT), ("ssh_host_", "cur ssh-ed25519 AAAAhostkey root@main\n"),
                            ("ss -Htln", ALL_LISTENERS), ("permitlisten", PERMITTED)])
    base, _ = pi_steps.base_ops(inv, beta)
    pi = FakeHost("beta", [(pi_locations.key_path(beta), f"PUB {keys['beta']}"), ("-printf '%f", "main\n"),
                           ("passwordauthentication|kbd", "passwordauthentication no"),
                           *converged([*base, *pi_steps.tunnel_ops(inv, beta, main, ["ssh-ed25519 AAAAhostkey"]),
                                       *pi_steps.password_ops()])])
    play = play_on(inv, {"main": vps, "beta": pi}, limit=frozenset({"main", "beta"}))
    site.provision(play)
    assert play.failed == set() and vps.ops == [] and pi.ops == []
    assert pi.logins == [False]  # the key login is still proven before passwords stay off
    assert (vps.round_trips, pi.round_trips) == (2, 2)


def test_vpses_of_the_pis_once_each_in_order(inv: Inventory) -> None:
    pis = list(inv.pis.values())
    assert [v.name for v in inv.vpses_of_pis(pis)] == ["main", "spare"]
    assert [v.name for v in inv.vpses_of_pis([inv.pis["gamma"], inv.pis["alpha"]])] == ["spare", "main"]


def test_status_rows_sorted_by_pi_and_tunnel_with_each_vpss_listeners(inv: Inventory) -> None:
    up = "NRestarts=0\nActiveState=active\nActiveEnterTimestamp=since\nSshStarts=1\nLastStart=last\n"
    hosts = {"main": vps_host(ss=sessions_holding("LISTEN 0 128 0.0.0.0:20022 0.0.0.0:*\n")),
             "spare": vps_host("spare", ss=sessions_holding(ALL_LISTENERS)),
             "gamma": FakeHost("gamma", commands=[("systemctl show", up)]),
             "alpha": FakeHost("alpha", commands=[("systemctl show", up)]),
             "beta": FakeHost("beta", commands=[("systemctl show", up)])}
    rows = status(play_on(inv, hosts))  # type: ignore[arg-type]
    assert [(r.pi, r.tunnel, r.up) for r in rows] == [("alpha", "ssh", True), ("alpha", "web", False),
                                                      ("beta", "ssh", False), ("gamma", "ssh", True)]


def test_verify_reads_each_vps_once_and_reports_every_selected_pi(inv: Inventory) -> None:
    unit = [("systemctl is-enabled", "enabled=enabled\nactive=active\nwatchdog=active\n"), ("PROBE", "PROBE command ok\n")]
    hosts = {"main": vps_host(), "spare": vps_host("spare"), "beta": FakeHost("beta", unit), "gamma": FakeHost("gamma", unit)}
    reports = verify(play_on(inv, hosts, limit=frozenset({"beta", "gamma"})))  # type: ignore[arg-type]
    assert [r.pi for r in reports] == ["beta", "gamma"]
    assert all(len(h.scripts) == 1 for n, h in hosts.items() if n in ("main", "spare"))
    for report in reports:
        listen = next(c for c in report.checks if "VPS listens on" in c.name)
        assert listen.passed  # each Pi judged by its own VPS's listeners


def test_teardown_of_some_pis_takes_their_keys_off_their_vps(inv: Inventory, keys: dict[str, str]) -> None:
    kept = vps_authorized.authorized_keys(inv, inv.vps["main"], {"alpha": " ".join(keys["alpha"].split()[:2]),
                                                            "beta": " ".join(keys["beta"].split()[:2])})
    text = kept.wanted(FileState(False))
    state = "root:root:600\n" + base64.b64encode(text.encode()).decode()
    main = vps_host()
    main.answers.insert(0, ("authorized_keys", state))
    hosts = {"main": main, "alpha": FakeHost("alpha"), "beta": FakeHost("beta")}
    site.teardown(play_on(inv, hosts, limit=frozenset({"alpha"})), purge=False)  # type: ignore[arg-type]
    after = vps_authorized.authorized_keys(inv, inv.vps["main"], {}, drop=frozenset({"alpha"})).wanted(
        FileState(True, content=text.encode()))
    assert "pitunnel:alpha" not in after and "pitunnel:beta" in after
    assert written(main, "authorized_keys", after)
    assert hosts["beta"].scripts == [] and not main.applied("userdel")  # the VPS itself stays


def test_teardown_of_a_vps_with_its_pis_removes_the_account_not_each_key(inv: Inventory) -> None:
    main = vps_host()
    main.answers.insert(0, ("getent passwd pitunnel || true", ACCOUNT))
    main.answers.insert(0, ("/var/lib/pitunnel/users", "pitunnel"))
    hosts = {"main": main, "alpha": FakeHost("alpha"), "beta": FakeHost("beta")}
    site.teardown(play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"})), purge=False)  # type: ignore[arg-type]
    assert not any("authorized_keys" in body for body in main.ops)
    assert main.applied("userdel") and hosts["alpha"].scripts and hosts["beta"].scripts


def test_teardown_of_everything_leaves_the_keys_to_the_accounts_removal(inv: Inventory) -> None:
    hosts = {n: vps_host(n) for n in ("main", "spare")} | {n: FakeHost(n) for n in ("alpha", "beta", "gamma")}
    site.teardown(play_on(inv, hosts), purge=False)  # type: ignore[arg-type]
    assert all(not any("authorized_keys" in b for b in hosts[v].ops) for v in ("main", "spare"))
    assert all(hosts[v].scripts for v in hosts)


def test_the_facts_a_vps_tells_its_pis() -> None:
    facts = VpsFacts(("ssh-ed25519 AAAA",), frozenset({"127.0.0.1:20023"}))
    assert facts.host_keys == ("ssh-ed25519 AAAA",) and "127.0.0.1:20023" in facts.listeners


def test_when_a_vps_cannot_be_read_its_pis_are_still_reported(inv: Inventory) -> None:
    class Down(FakeHost):
        def run(self, script: str, **kw: object) -> object:  # type: ignore[override]
            from pitunnel.remote import Unreachable
            raise Unreachable("main: no route to host")

    unit = [("systemctl is-enabled", "enabled=enabled\nactive=active\nwatchdog=active\n")]
    hosts = {"main": Down("main"), "beta": FakeHost("beta", unit)}
    (report,) = verify(play_on(inv, hosts, limit=frozenset({"main", "beta"})))  # type: ignore[arg-type]
    assert (report.pi, report.vps) == ("beta", "main")  # the path is still reported: unproven, and why
    assert [(c.name, c.passed, c.detail) for c in report.checks] == [
        ("reach the VPS main", False, "main: no route to host: this path is unproven")]
    hosts = {"main": Down("main"), "beta": FakeHost("beta", commands=[("systemctl show", "NRestarts=0\nActiveState=active\nActiveEnterTimestamp=x\nSshStarts=1\nLastStart=y\n")])}
    (row,) = status(play_on(inv, hosts, limit=frozenset({"main", "beta"})))  # type: ignore[arg-type]
    assert (row.pi, row.unit, row.up) == ("beta", "active", False)  # active, but nobody saw it listening


def test_status_shows_a_pi_that_could_not_be_read_as_its_vps_sees_it(inv: Inventory) -> None:
    class Down(FakeHost):
        def run(self, script: str, **kw: object) -> object:  # type: ignore[override]
            from pitunnel.remote import Unreachable
            raise Unreachable("alpha: no route to host")

    hosts = {"main": vps_host(ss=sessions_holding(ALL_LISTENERS)), "alpha": Down("alpha"),
             "beta": FakeHost("beta", commands=[("systemctl show", "NRestarts=0\nActiveState=active\n")])}
    rows = status(play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"})))  # type: ignore[arg-type]
    assert [(r.pi, r.tunnel, r.known) for r in rows] == [("alpha", "ssh", True), ("alpha", "web", True),
                                                         ("beta", "ssh", True)]
    assert all(r.up and r.unit is None and r.unit_restarts is None and r.last_error == "the laptop could not reach the Pi: alpha: no route "
               "to host" for r in rows[:2])  # up as far as the VPS listens on each


def test_teardown_purges_the_packages_on_both_sides_only_when_asked(inv: Inventory) -> None:
    def hosts() -> dict[str, FakeHost]:
        main = vps_host()
        main.answers[:0] = [("dpkg-query", "nginx installed"), ("/packages", "nginx")]
        return {"main": main, "beta": FakeHost("beta", [("dpkg-query", "autossh installed"), ("/packages", "autossh")])}

    kept = hosts()
    site.teardown(play_on(inv, kept, limit=frozenset({"main", "beta"})), purge=False)  # type: ignore[arg-type]
    assert not any(h.applied("apt-get purge") for h in kept.values())
    purged = hosts()
    site.teardown(play_on(inv, purged, limit=frozenset({"main", "beta"})), purge=True)  # type: ignore[arg-type]
    assert purged["main"].applied("apt-get purge -y -q --autoremove nginx")
    assert purged["beta"].applied("apt-get purge -y -q --autoremove autossh")


def test_every_listener_sshd_does_not_permit_yet_is_named(inv: Inventory, keys: dict[str, str],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    hosts = {"main": vps_host(permitted="permitlisten 127.0.0.1:20080"), "alpha": pi_host(inv, "alpha", keys["alpha"]),
             "beta": pi_host(inv, "beta", keys["beta"])}
    site.provision_pi(play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"})))  # type: ignore[arg-type]
    assert ("failed main sshd permits the Pis' listeners - not yet: alpha: 0.0.0.0:20022, beta: 127.0.0.1:20023; run "
            "`invoke provision-vps` (or `invoke provision`) first") in lines(capsys)


def test_a_vps_is_offered_only_its_own_pis(inv: Inventory, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    hosts = {"main": vps_host(permitted="permitlisten 127.0.0.1:20023"), "spare": vps_host("spare"),
             "beta": FakeHost("beta"), "gamma": FakeHost("gamma")}
    play = play_on(inv, hosts, limit=frozenset({"main", "spare", "beta", "gamma"}))  # type: ignore[arg-type]
    bases = {n: pi_steps.PiBase(PiOffer(n, offer_key(keys[n]), listens(inv.pis[n].first_path)), False) for n in ("beta", "gamma")}
    site.connect(play, bases)
    assert play.failed == set()  # main permits beta's listener; gamma's is spare's business


def test_the_listener_wait_names_every_forward_missing(inv: Inventory, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from pitunnel.runner import StepFailed
    from pitunnel.shared import SharedReading
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 0.2)
    play = play_on(inv, {})
    with pytest.raises(StepFailed):
        site.wait_listening(play, inv.pis["alpha"].first_path, SharedReading(lambda: frozenset()), None)
    assert lines(capsys) == ["failed alpha tunnel listening on the VPS - main: not listening after 0.2s: 0.0.0.0:20022, "
                             "127.0.0.1:20080 (see `journalctl -u pitunnel@main.service` on the Pi)"]


def connect_enrolled_beta(inv: Inventory, monkeypatch: pytest.MonkeyPatch, keys: dict[str, str],
                          after: list[frozenset[str]], *, check: bool = False) -> tuple[site.Play, list[str]]:
    """beta enrolled: main still accepts its bootstrap key, and its first reading shows beta's listener (the
    bootstrap's, then); beta's tunnel step changes nothing. What main reads once the bootstrap went: `after`,
    one reading each, the last one again once they run out. Returns the play and the order of events."""
    journal: list[str] = []
    monkeypatch.setattr(site.vps, "authorise", lambda *a: VpsFacts(
        ("ssh-ed25519 AAAA",), frozenset({"127.0.0.1:20023"}), bootstrapped=frozenset({"beta"})))
    monkeypatch.setattr(pi_steps, "tunnel", lambda play, remote, base, host_keys: pi_steps.Tunneled(set(), None))
    monkeypatch.setattr(pi_steps, "passwords_off", lambda play, remote, known=None: None)
    monkeypatch.setattr(site.bootstrap, "retire", lambda play, remote: journal.append("bootstrap retired on beta"))
    monkeypatch.setattr(site.vps, "unauthorise_bootstrap", lambda remote, *a: journal.append(f"its key off {remote.name}"))

    def reading(remote: object) -> frozenset[str]:
        journal.append("listeners read")
        return after.pop(0) if len(after) > 1 else after[0]

    monkeypatch.setattr(site.vps, "listeners", reading)
    play = play_on(inv, {"main": vps_host(), "beta": FakeHost("beta")}, check=check,  # type: ignore[dict-item]
                   limit=frozenset({"main", "beta"}))
    site.connect(play, {"beta": pi_steps.PiBase(PiOffer("beta", offer_key(keys["beta"]), (Listener(False, 20023),)), False)})
    return play, journal


def test_an_enrolled_pi_is_done_only_once_its_own_tunnel_took_the_listeners_over_from_the_bootstrap(
        inv: Inventory, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The first wait saw the bootstrap's listener; once the bootstrap went, none, until the Pi's own tunnel
    came back on its restart delay: the run waits for that, on a reading made after the bootstrap's key went."""
    play, journal = connect_enrolled_beta(inv, monkeypatch, keys, [frozenset(), frozenset(), frozenset({"127.0.0.1:20023"})])
    assert play.failed == set()
    assert journal[:2] == ["bootstrap retired on beta", "its key off main"] and journal[2:] == ["listeners read"] * 3
    out = lines(capsys)
    assert any(l.startswith("ok beta tunnel listening on the VPS - main: 127.0.0.1:20023") and "after" not in l
               for l in out), out
    assert any(l.startswith("ok beta own tunnel listening on the VPS, bootstrap gone - main: 127.0.0.1:20023 (after ")
               for l in out), out


def test_an_enrolled_pi_whose_own_tunnel_never_listens_once_the_bootstrap_went_fails(
        inv: Inventory, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 1)
    play, _ = connect_enrolled_beta(inv, monkeypatch, keys, [frozenset()])
    assert play.failed == {"beta"}
    assert ("failed beta own tunnel listening on the VPS, bootstrap gone - main: not listening after 1s: 127.0.0.1:20023 "
            "(see `journalctl -u pitunnel@main.service` on the Pi)") in lines(capsys)


def test_in_check_mode_nothing_waits_for_the_bootstrap_to_go(inv: Inventory, keys: dict[str, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    play, journal = connect_enrolled_beta(inv, monkeypatch, keys, [frozenset()], check=True)
    assert play.failed == set()
    assert journal == ["bootstrap retired on beta", "its key off main"]  # planned, and no listener read nor waited for
