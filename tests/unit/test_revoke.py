"""`pitunnel revoke` without hosts: what is remembered on the laptop (the record, the reserved ports), what each
later run makes of it (provision leaves the Pi out, a revoked key never goes back, `auto` never hands out its
ports), and what revoke sends its VPSes (and never its Pi); on scripted hosts (tests/unit/fake_hosts.py)."""

from __future__ import annotations

import base64
import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from invoke import Context, Exit

from pitunnel import tasks
from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, InventoryError, Revoked, load_inventory
from pitunnel.inventory.revoked import read_revoked, revoked_file, write_revoked
from pitunnel.roles import site
from pitunnel.roles.contract import PiOffer, listens
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.pi import steps as pi_steps
from pitunnel.remote import Result, Unreachable
from pitunnel.roles.revoke import keys_off, revoke, routes_off
from pitunnel.roles.vps import authorized as vps_authorized
from pitunnel.roles.vps import nginx as vps_nginx
from pitunnel.roles.vps import steps as vps_steps
from pitunnel.sshkeys import parse_public_key
from tests.unit.fake_hosts import FakeHost, converged, lines, load, play_on
from tests.unit.test_site import INVENTORY, offer_key, pi_host, vps_host
from tests.unit.test_templates import keygen

AUTO = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main: {address: 203.0.113.1, port_range: [20000, 20009]}
pis:
  alpha:
    address: 10.0.0.2
    tunnels:
      ssh: {type: ssh, remote_port: auto, public: true}
      web: {type: http, local_port: 8080, remote_port: auto, path: /alpha/}
  beta:
    address: 10.0.0.3
    tunnels:
      ssh: {type: ssh, remote_port: auto}
"""


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("keys")
    return {n: " ".join(keygen(base / n, f"made on {n}").split()[:2]) for n in ("alpha", "beta", "alpha2")}


def keys_state(*lines_: str) -> str:
    """The tunnel account's authorized_keys as the file fact reads it."""
    text = "".join(line + "\n" for line in lines_)
    return f"pitunnel:pitunnel:600\n{base64.b64encode(text.encode()).decode()}"


def revoked_vps(inv: Inventory, keys: dict[str, str], *, alpha: bool = True, routes: bool = True) -> FakeHost:
    """main with alpha's and beta's key lines (or beta's alone), and alpha's path route (or none)."""
    vps = inv.vps["main"]
    found = [vps_authorized.authorized_line(vps, inv.pis[n].path(vps.name), keys[n])
             for n in (("alpha", "beta") if alpha else ("beta",))]
    sessions = "NOW 20261206050000 20261206050000\n" + "".join(
        f"S {pid} {pid - 1}\nJ " + json.dumps({"MESSAGE": f"Accepted publickey for pitunnel from 198.51.100.7 port "
                                                       f"40000 ssh2: ED25519 {parse_public_key(keys[n]).fingerprint}",
                                               "_PID": str(pid - 1)}) + "\n"
        for n, pid in (("alpha", 4242), ("beta", 5252)) if alpha or n == "beta")
    return FakeHost("main", [("Accepted publickey for ", sessions),
                             ("authorized_keys", keys_state(*found)),
                             ("locations/alpha_web.conf", "yes" if routes else "no"), ("[ -e ", "no")])


def sent(host: FakeHost, name: str = "authorized_keys") -> str:
    """What was written to the file `name` on `host` (File ops send it base64-encoded)."""
    blobs = re.findall(r"printf %s (\S+) \| base64 -d > new", "\n".join(b for b in host.ops if f"n={name}\n" in b))
    return "".join(base64.b64decode(b).decode(errors="replace") for b in blobs)


def record(tmp_path: Path, *records: Revoked) -> None:
    write_revoked(revoked_file(tmp_path / "hosts.yml"), {r.pi: r for r in records})


def test_revoke_remembers_the_pi_then_takes_its_keys_and_routes_off_its_vps_and_never_contacts_it(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    hosts = {"main": revoked_vps(inv, keys), "alpha": FakeHost("alpha")}
    play = play_on(inv, hosts)  # type: ignore[arg-type]
    revoke(play, "alpha")
    assert hosts["alpha"].scripts == []  # the Pi is not contacted
    assert play.failed == set()
    saved = read_revoked(revoked_file(inv.path))[0]["alpha"]
    assert saved.keys == (parse_public_key(keys["alpha"]),) and saved.ports == {"main": {"ssh": 20022, "web": 20080}}
    beta = vps_authorized.authorized_line(inv.vps["main"], inv.pis["beta"].first_path, keys["beta"]) + "\n"
    assert sent(hosts["main"]) == beta  # alpha's line gone, beta's kept as it was
    # sshd refuses the key outright from now on, for the tunnel account
    assert sent(hosts["main"], "pitunnel_revoked_keys") == f"{keys['alpha']} pitunnel-revoked:alpha\n"
    assert "RevokedKeys /etc/ssh/pitunnel_revoked_keys" in sent(hosts["main"], "10-pitunnel.conf")
    # its listeners' address stays permitted (alpha's is the only public tunnel): sshd's config does not change
    assert 'PermitListen "127.0.0.1:*" "0.0.0.0:*"' in sent(hosts["main"], "10-pitunnel.conf")
    assert hosts["main"].applied("for pair in 4242:4241; do")  # alpha's session (an outsider's, may be) ended
    assert not hosts["main"].applied("5252")  # beta's goes on
    assert hosts["main"].applied("rm -rf /etc/nginx/pitunnel/locations/alpha_web.conf")
    assert hosts["main"].applied("nginx -t 2>&1 && systemctl reload-or-restart nginx")  # reload after nginx -t
    out = lines(capsys)
    assert "changed main alpha's keys off the tunnel account - content" in out
    assert any(l.startswith("changed alpha revoked, remembered on the laptop - hosts.revoked.yml: SHA256:") for l in out)
    assert any("alpha is shut out of its VPSes" in l and "--release-ports" in l for l in out)  # what to do next


def test_revoke_in_check_mode_sends_no_change_and_writes_nothing(tmp_path: Path, keys: dict[str, str],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    hosts = {"main": revoked_vps(inv, keys), "alpha": FakeHost("alpha")}
    revoke(play_on(inv, hosts, check=True), "alpha")  # type: ignore[arg-type]
    assert hosts["main"].ops == [] and hosts["alpha"].scripts == []
    assert not revoked_file(inv.path).exists()
    out = lines(capsys)
    assert "would change main alpha's keys off the tunnel account - content" in out
    assert "would change main nginx path of alpha/web off - remove" in out
    assert any(l.startswith("would change main sessions of retired keys ended - end 1 session (pid 4242") for l in out)


def test_a_second_revoke_changes_nothing_and_says_so(tmp_path: Path, keys: dict[str, str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    load(tmp_path, INVENTORY)
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z", (parse_public_key(keys["alpha"]),), {"main": {"ssh": 20022, "web": 20080}}))
    inv = load(tmp_path, INVENTORY)
    assert "alpha" in inv.shut and "alpha" not in inv.pis
    main = revoked_vps(inv, keys, alpha=False, routes=False)
    main.answers[:0] = converged([vps_authorized.revoked_keys_file(inv), vps_steps.sshd_dropin(vps_steps.context(inv, inv.vps["main"]))])
    hosts = {"main": main, "alpha": FakeHost("alpha")}
    revoke(play_on(inv, hosts), "alpha")  # type: ignore[arg-type]
    assert hosts["main"].ops == [] and hosts["alpha"].scripts == []
    out = lines(capsys)
    assert any(l.startswith("ok alpha revoked, remembered on the laptop - already, since 2026-12-06T05:00:00Z") for l in out)
    assert "ok main alpha's keys off the tunnel account - already as wanted" in out
    assert any(l.startswith("ok main sessions of retired keys ended - none") for l in out)


def test_provision_leaves_a_revoked_pi_out_and_its_key_and_routes_off_the_vps(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    before = load(tmp_path, INVENTORY)
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z", (parse_public_key(keys["alpha"]),), {"main": {"ssh": 20022, "web": 20080}}))
    inv = load(tmp_path, INVENTORY)
    main = inv.vps["main"]
    assert [r.pi for r in vps_nginx.http_routes(inv, main)] == []  # alpha's route stays off
    # its listeners stay permitted, in the same order: it comes back with a new key without provision-vps
    # first, and sshd's Match block does not change when it does
    assert vps_steps.context(inv, main)["listens"] == vps_steps.context(before, main)["listens"]
    # a file still holding alpha's line (an old backup put back): provisioning takes it off
    old = vps_authorized.authorized_line(main, inv.shut["alpha"].first_path, keys["alpha"])
    wanted = vps_authorized.authorized_keys(inv, main, {"beta": keys["beta"]}).wanted(
        FileState(True, content=f"{old}\n".encode()))
    assert "pitunnel:alpha" not in wanted and keys["alpha"] not in wanted and "pitunnel:beta" in wanted
    hosts = {"main": vps_host(), "alpha": FakeHost("alpha"), "beta": pi_host(inv, "beta", keys["beta"])}
    play = play_on(inv, hosts, limit=frozenset({"main", "alpha", "beta"}))  # type: ignore[arg-type]
    site.provision_pi(play)
    assert hosts["alpha"].scripts == [] and "alpha" not in play.reporter.recaps
    assert "pitunnel:beta" in sent(hosts["main"]) and keys["alpha"] not in sent(hosts["main"])


def test_a_revoked_key_offered_again_is_refused_and_a_new_one_ends_the_revocation(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)
    monkeypatch.setattr(pi_steps, "tunnel", lambda play, remote, base, host_keys: pi_steps.Tunneled(set(), None))
    monkeypatch.setattr(pi_steps, "passwords_off", lambda play, remote, known=None: None)
    load(tmp_path, INVENTORY)
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z", (parse_public_key(keys["alpha"]),), {"main": {"ssh": 20022, "web": 20080}}))
    inv = load_inventory(tmp_path / "hosts.yml", reinstate=frozenset({"alpha"}))  # provision-pi --limit alpha
    assert "alpha" in inv.pis and "alpha" in inv.revoked

    def offer(key: str) -> dict[str, pi_steps.PiBase]:
        return {"alpha": pi_steps.PiBase(PiOffer("alpha", offer_key(key), listens(inv.pis["alpha"].first_path)), False)}

    hosts = {"main": vps_host(), "alpha": FakeHost("alpha")}
    play = play_on(inv, hosts, limit=frozenset({"alpha"}))  # type: ignore[arg-type]
    site.connect(play, offer(keys["alpha"]))
    assert play.failed == {"alpha"} and keys["alpha"] not in sent(hosts["main"])
    assert any(l.startswith("failed alpha tunnel key not revoked - it offers the key revoked by `pitunnel revoke` "
                            "(SHA256:") and "re-image alpha" in l for l in lines(capsys))
    assert "alpha" in read_revoked(revoked_file(inv.path))[0]  # still revoked
    hosts = {"main": vps_host(), "alpha": FakeHost("alpha")}
    play = play_on(inv, hosts, limit=frozenset({"alpha"}))  # type: ignore[arg-type]
    site.connect(play, offer(keys["alpha2"]))
    assert play.failed == set() and f"{keys['alpha2']} pitunnel:alpha" in sent(hosts["main"])
    assert read_revoked(revoked_file(inv.path))[0]["alpha"].ended  # kept, ended: its old key stays refused
    assert any(l.startswith("changed alpha revoked state ended") for l in lines(capsys))
    inv = load(tmp_path, INVENTORY)
    assert "alpha" in inv.pis and not inv.shut and [r.pi for r in vps_nginx.http_routes(inv, inv.vps["main"])] == ["alpha"]
    old = vps_authorized.authorized_line(inv.vps["main"], inv.pis["alpha"].first_path, keys["alpha"])
    assert keys["alpha"] not in vps_authorized.authorized_keys(inv, inv.vps["main"], {"beta": keys["beta"]}).wanted(
        FileState(True, content=f"{old}\n".encode()))
    hosts = {"main": vps_host(), "alpha": FakeHost("alpha")}
    play = play_on(inv, hosts, limit=frozenset({"alpha"}))  # type: ignore[arg-type]
    site.connect(play, offer(keys["alpha"]))  # the old key again, after all
    assert play.failed == {"alpha"} and keys["alpha"] not in sent(hosts["main"])


def test_a_revoked_pi_removed_from_the_inventory_keeps_its_ports_until_released(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, AUTO)
    alpha = {t.name: t.remote_port for t in inv.pis["alpha"].tunnels}
    assert alpha == {"ssh": 20000, "web": 20001}
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z", (parse_public_key(keys["alpha"]),), {"main": alpha}))
    text = textwrap.dedent(AUTO)
    without = text[:text.index("  alpha:")] + text[text.index("  beta:"):]  # alpha gone from the inventory
    gamma = without + "  gamma:\n    address: 10.0.0.4\n    tunnels:\n      web: {type: http, local_port: 80, path: /g/}\n"
    inv = load(tmp_path, gamma)
    assert inv.pis["gamma"].tunnels[0].remote_port not in alpha.values()  # auto never hands them out
    lock = yaml.safe_load((tmp_path / "hosts.ports.yml").read_text())
    assert lock["main"]["alpha/ssh"] == 20000 and lock["main"]["alpha/web"] == 20001  # reserved in the ports file
    clash = gamma.replace("path: /g/}", "path: /g/, remote_port: 20001}")
    with pytest.raises(InventoryError) as caught:
        load(tmp_path, clash)
    assert ("port 20001 on VPS 'main' is reserved for the revoked Pi alpha. Fix: choose another port, or free it: "
            "remove alpha for good with `pitunnel revoke alpha --release-ports`.") in str(caught.value)
    tasks.revoke(Context(), pi="alpha", release_ports=True, inventory=str(tmp_path / "hosts.yml"))  # clash and all
    assert not revoked_file(tmp_path / "hosts.yml").exists()
    lock = yaml.safe_load((tmp_path / "hosts.ports.yml").read_text())
    assert "alpha/ssh" not in lock["main"] and "alpha/web" not in lock["main"]
    assert "released alpha: its revocation forgotten, its ports free for `auto` again (main: 20000, 20001)" in \
        capsys.readouterr().out
    assert load(tmp_path, clash).pis["gamma"].tunnels[0].remote_port == 20001  # the port is free now


def test_bad_names_are_one_line_naming_the_fix_with_exit_3_before_any_host(tmp_path: Path, keys: dict[str, str]) -> None:
    inv = load(tmp_path, INVENTORY)
    with pytest.raises(Exit) as caught:
        tasks.vet_revoke(inv, "delta")
    assert caught.value.code == 3
    assert caught.value.message == (f"revoke: no Pi named 'delta' in {inv.path} (its Pis: alpha, beta, gamma). "
                                    "Fix: give the name of one of them")
    with pytest.raises(Exit) as caught:
        tasks.revoke(Context(), pi="alpha", release_ports=True, inventory=str(inv.path))
    assert caught.value.code == 3 and f"alpha is still in {inv.path}. Fix: remove pis.alpha" in str(caught.value.message)


def test_a_damaged_revoked_file_stops_every_run_naming_it(tmp_path: Path) -> None:
    load(tmp_path, INVENTORY)
    revoked_file(tmp_path / "hosts.yml").write_text("alpha: {since: now, keys: [not-a-key]}\n")
    with pytest.raises(InventoryError) as caught:
        load(tmp_path, INVENTORY)
    assert "hosts.revoked.yml:1" in str(caught.value) and "alpha.keys: expected a list of public keys" in str(caught.value)
    assert "put back the copy you keep with the inventory" in str(caught.value)


def test_limit_naming_a_revoked_pi_says_only_provision_pi_takes_it(tmp_path: Path, keys: dict[str, str]) -> None:
    from pitunnel.play import BadLimit, resolve_limit

    load(tmp_path, INVENTORY)
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z", (parse_public_key(keys["alpha"]),), {}))
    inv = load(tmp_path, INVENTORY)
    with pytest.raises(BadLimit, match="alpha is revoked .*but provision-pi and provision"):
        resolve_limit(frozenset({"alpha"}), inv)


# ------------------------------------------------------------------------------- each piece, exactly


class Down(FakeHost):
    """A VPS that does not answer."""

    def run(self, script: str, *, timeout: float | None = None, **_: object) -> Result:
        raise Unreachable(f"{self.name}: no route to host")


def test_the_pis_nginx_files_go_each_with_a_reload_whatever_kind_each_route_is(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    assert routes_off(inv.pis["beta"]) == []  # an ssh tunnel has no Nginx file
    assert [(type(op).__name__, op.path, op.notify, op.title) for op in routes_off(inv.pis["alpha"])] == [  # type: ignore[attr-defined]
        ("Absent", "/etc/nginx/sites-enabled/pitunnel-alpha_web.conf", ("reload nginx",), "nginx site of alpha/web off"),
        ("Absent", "/etc/nginx/pitunnel/locations/alpha_web.conf", ("reload nginx",), "nginx path of alpha/web off"),
        ("Absent", "/etc/nginx/pitunnel/auth/alpha_web.htpasswd", ("reload nginx",), "basic auth of alpha/web off")]


def test_only_pitunnels_lines_of_the_pi_or_holding_its_keys_leave_authorized_keys(tmp_path: Path,
                                                                                 keys: dict[str, str]) -> None:
    inv = load(tmp_path, INVENTORY)
    alpha, beta = keys["alpha"], keys["beta"]
    gone = Revoked("alpha", "2026-12-06T05:00:00Z", (parse_public_key(alpha),), {})
    text = "\n".join([f"restrict {alpha} pitunnel:alpha",  # the Pi's own line
                      f"{alpha} pitunnel:alpha",  # three words: still pitunnel's
                      f"restrict {alpha} pitunnel:beta",  # pitunnel's line holding its key, under another name
                      f"restrict {beta} pitunnel:beta",  # another Pi's
                      f"{alpha} owner@laptop",  # the user's own line with the same key: not pitunnel's
                      "# caf\xe9 notes",  # not UTF-8: kept byte for byte as far as it reads
                      f"{beta}"]) + "\n"
    op = keys_off(inv.vps["main"], gone)
    kept = op.wanted(FileState(True, content=text.encode("latin-1")))
    assert kept == f"restrict {beta} pitunnel:beta\n{alpha} owner@laptop\n# caf\ufffd notes\n{beta}\n"
    assert (op.path, op.owner, op.group, op.mode, op.title) == (
        "/var/lib/pitunnel/.ssh/authorized_keys", "pitunnel", "pitunnel", 0o600, "alpha's keys off the tunnel account")


def test_a_vps_without_authorized_keys_gets_none_made_and_the_record_says_no_key(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    main = FakeHost("main", [("authorized_keys", "ABSENT"), ("[ -e ", "no")])
    revoke(play_on(inv, {"main": main, "alpha": FakeHost("alpha")}), "alpha")  # type: ignore[arg-type]
    assert sent(main) == ""
    out = lines(capsys)
    assert "ok main alpha's keys off the tunnel account - absent: nothing to change" in out
    assert ("changed alpha revoked, remembered on the laptop - hosts.revoked.yml: no key of it on its VPSes; its ports "
            "stay reserved; alpha was not contacted") in out
    saved = read_revoked(revoked_file(inv.path))[0]["alpha"]
    assert saved.keys == () and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", saved.since)


def test_a_vps_that_does_not_answer_is_named_and_the_pi_still_remembered(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    play = play_on(inv, {"main": Down("main"), "alpha": FakeHost("alpha")})  # type: ignore[arg-type]
    revoke(play, "alpha")
    assert play.failed == {"main"} and "alpha" in read_revoked(revoked_file(inv.path))[0]
    out = lines(capsys)
    assert ("WARNING alpha alpha is NOT yet shut out of main (see above): rerun `pitunnel revoke alpha` once it "
            "answers. Every later run leaves alpha out meanwhile") in out


def test_check_mode_says_the_record_would_change(tmp_path: Path, keys: dict[str, str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    revoke(play_on(inv, {"main": revoked_vps(inv, keys), "alpha": FakeHost("alpha")}, check=True), "alpha")  # type: ignore[arg-type]
    fingerprint = parse_public_key(keys["alpha"]).fingerprint
    assert (f"would change alpha revoked, remembered on the laptop - hosts.revoked.yml: {fingerprint}; its ports stay "
            "reserved; alpha was not contacted") in lines(capsys)


def test_a_pi_revoked_again_keeps_the_keys_of_its_earlier_revocation(tmp_path: Path, keys: dict[str, str],
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    load(tmp_path, INVENTORY)
    old = parse_public_key(keys["alpha"])
    record(tmp_path, Revoked("alpha", "2026-12-01T05:00:00Z", (old,), {"main": {"ssh": 20022, "web": 20080}},
                             ended="2026-12-02T05:00:00Z"))
    inv = load(tmp_path, INVENTORY)
    assert "alpha" in inv.retired and "alpha" in inv.pis
    main = FakeHost("main", [("authorized_keys", keys_state(vps_authorized.authorized_line(
        inv.vps["main"], inv.pis["alpha"].first_path, keys["alpha2"]))), ("[ -e ", "no")])
    revoke(play_on(inv, {"main": main, "alpha": FakeHost("alpha")}), "alpha")  # type: ignore[arg-type]
    new = parse_public_key(keys["alpha2"])
    saved = read_revoked(revoked_file(inv.path))[0]["alpha"]
    assert saved.keys == (old, new) and not saved.ended
    assert any(l.startswith("changed alpha revoked, remembered on the laptop - hosts.revoked.yml: "
                            f"{old.fingerprint}, {new.fingerprint}; ") for l in lines(capsys))


def test_sshds_revoked_keys_file_lists_every_revoked_key_on_a_line_of_its_own(tmp_path: Path,
                                                                             keys: dict[str, str]) -> None:
    """Two keys of one Pi (revoked again after a new key) and a second Pi's: sshd reads RevokedKeys a key a line,
    so each of the three is a line of its own, named by its Pi; a key revoked twice is listed once."""
    load(tmp_path, INVENTORY)
    alpha, alpha2, beta = (parse_public_key(keys[n]) for n in ("alpha", "alpha2", "beta"))
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z", (alpha, alpha2), {"main": {"ssh": 20022, "web": 20080}}),
           Revoked("beta", "2026-12-06T05:00:00Z", (beta, beta), {"main": {"ssh": 20023}}))
    file = vps_authorized.revoked_keys_file(load(tmp_path, INVENTORY))
    assert file.path == "/etc/ssh/pitunnel_revoked_keys" and file.create
    assert file.wanted(FileState(False)) == (f"{keys['alpha']} pitunnel-revoked:alpha\n"
                                             f"{keys['alpha2']} pitunnel-revoked:alpha\n"
                                             f"{keys['beta']} pitunnel-revoked:beta\n")


FIX = ("it is written by `pitunnel revoke`: put back the copy you keep with the inventory (do not delete it while its "
       "Pis are out of your hands; docs/operations.md)")


@pytest.mark.parametrize(("text", "problem"), [
    ("Bad_Name: {since: x}\n", "Bad_Name: expected a Pi name and a mapping (since, keys, ports), got a mapping"),
    ("alpha: [1]\n", "alpha: expected a Pi name and a mapping (since, keys, ports), got a list"),
    ("alpha: {since: 5}\n", "alpha: expected the keys since (a time), keys, ports and ended (a time) only"),
    ("alpha: {since: x, ended: 5}\n", "alpha: expected the keys since (a time), keys, ports and ended (a time) only"),
    ("alpha: {since: x, colour: red}\n", "alpha: expected the keys since (a time), keys, ports and ended (a time) only"),
    ("alpha: {since: x, keys: [5]}\n", "alpha.keys: expected a list of public keys ('type base64')"),
    ("alpha: {since: x, ports: [1]}\n", "alpha.ports: expected {VPS: {tunnel: port}}"),
    ("alpha: {since: x, ports: {main: 5}}\n", "alpha.ports: expected {VPS: {tunnel: port}}"),
    ("alpha: {since: x, ports: {main: {ssh: 80}}}\n", "alpha.ports.main.ssh: 80 is out of range"),
], ids=["bad-name", "not-a-mapping", "since-not-a-time", "ended-not-a-time", "unknown-key", "keys-not-keys",
        "ports-not-a-mapping", "ports-of-a-vps-not-a-mapping", "privileged-port"])
def test_each_damage_to_the_revoked_file_is_one_problem_naming_the_key_and_the_fix(tmp_path: Path, text: str,
                                                                                  problem: str) -> None:
    file = tmp_path / "hosts.revoked.yml"
    file.write_text(text)
    found, problems = read_revoked(file)
    assert found == {} and len(problems) == 1
    said = f"{problems[0].key}: {problems[0].message}"
    assert said == problem and problems[0].fix == FIX and problems[0].line == 1


def test_the_revoked_file_is_written_one_key_a_line_and_goes_with_its_last_record(tmp_path: Path,
                                                                                 keys: dict[str, str]) -> None:
    file = tmp_path / "hosts.revoked.yml"
    write_revoked(file, {})  # none, and no file: nothing to do
    assert not file.exists()
    long_key = keys["alpha"] + " " + "a-comment-that-makes-the-line-long" * 3
    alpha = Revoked("alpha", "2026-12-06T05:00:00Z", (parse_public_key(long_key),), {"main": {"ssh": 20022}})
    beta = Revoked("beta", "2026-12-01T05:00:00Z", (parse_public_key(keys["beta"]),), {}, ended="2026-12-02T05:00:00Z")
    write_revoked(file, {"alpha": alpha, "beta": beta})
    text = file.read_text()
    assert f"  - {parse_public_key(long_key).line}\n" in text  # never folded, however long
    assert text.count("ended:") == 1 and "ended: '2026-12-02T05:00:00Z'" in text
    assert read_revoked(file) == ({"alpha": alpha, "beta": beta}, [])
    write_revoked(file, {})
    assert not file.exists()


def test_release_ports_in_check_mode_says_what_it_would_do_and_the_refusals_name_their_fix(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, AUTO)
    alpha = {t.name: t.remote_port for t in inv.pis["alpha"].tunnels}
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z", (parse_public_key(keys["alpha"]),), {"main": alpha}))
    text = textwrap.dedent(AUTO)
    load(tmp_path, text[:text.index("  alpha:")] + text[text.index("  beta:"):])  # alpha gone from the inventory
    hosts, revoked = str(tmp_path / "hosts.yml"), revoked_file(tmp_path / "hosts.yml")
    before = revoked.read_text()
    tasks.revoke(Context(), pi="alpha", release_ports=True, inventory=hosts, check=True)
    assert revoked.read_text() == before  # nothing changed
    assert capsys.readouterr().out == ("would release alpha: its revocation forgotten, its ports free for `auto` again "
                                       "(main: 20000, 20001)\n")
    with pytest.raises(Exit) as caught:
        tasks.revoke(Context(), pi="delta", release_ports=True, inventory=hosts)  # in neither file
    assert caught.value.code == 3 and caught.value.message == (
        f"revoke --release-ports: {revoked} holds no revoked Pi named 'delta' (revoked: alpha). Fix: give the name of "
        "one of them")
    revoked.write_text("alpha: {since: now, keys: [not-a-key]}\n")
    with pytest.raises(Exit) as caught:
        tasks.revoke(Context(), pi="alpha", release_ports=True, inventory=hosts)
    assert caught.value.code == 3 and "alpha.keys: expected a list of public keys" in str(caught.value.message)
    revoked.write_text(before)
    (tmp_path / "hosts.yml").write_text("pis: [unclosed\n")
    with pytest.raises(Exit) as caught:
        tasks.revoke(Context(), pi="alpha", release_ports=True, inventory=hosts)
    assert caught.value.code == 3 and str(caught.value.message).startswith(f"revoke --release-ports: cannot read {hosts} (")
    assert str(caught.value.message).endswith("). Fix: give the inventory with -i FILE")
