"""`invoke migrate --to NEW` driven end to end on scripted hosts (tests/unit/fake_hosts.py): what each VPS and Pi
is sent (both paths up, the old one retired, OLD's side torn down or kept), what each step reports, the inventory
and hosts.migrate.yml on the laptop, check mode, the refusals before any host, and a half-done move finished by a
rerun. The probes through the new VPS need real networking: `verify` is replaced by the reports a test gives it
(the migrate logic around it is real); the lab proves the whole on real hosts (tests/lab/test_daytwo.py)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest
import yaml

from pitunnel import reconcile
from pitunnel.inventory import Inventory, load_inventory, ports_file
from pitunnel.play import Play
from pitunnel.roles import migrate as migrate_module
from pitunnel.roles.migrate import MigrateRefused, migrate, state_file
from pitunnel.roles.pi import locations as pi_locations
from pitunnel.roles.pi import role as pi_role
from pitunnel.roles.probes.report import PathReport
from tests.unit.fake_hosts import ACCOUNT, FakeHost, in_order, lines, load, play_on
from tests.unit.test_rekey_flow import Killed, kill_after
from tests.unit.test_revoke import sent
from tests.unit.test_templates import keygen

INVENTORY = """\
# my fleet
settings: {laptop_key: null, known_hosts: kh}
vps:
  old: {address: 203.0.113.10}   # the VPS we leave
  new: {address: 198.51.100.20}
pis:
  pi0: {address: 10.0.0.9, vps: new, tunnels: {ssh: {type: ssh, remote_port: 20021}}}
  pi1:
    address: 10.0.0.1
    vps: old    # moves soon
    tunnels:
      ssh: {type: ssh, remote_port: 20022}
  pi2: {address: 10.0.0.2, vps: old, tunnels: {ssh: {type: ssh, remote_port: 20023}}}
"""

LISTENING = "".join(f"LISTEN 0 128 127.0.0.1:{p} 0.0.0.0:*\n" for p in (20021, 20022, 20023))
PERMITTED = "permitlisten 127.0.0.1:20021 127.0.0.1:20022 127.0.0.1:20023"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("keys")
    return {n: keygen(base / n, f"made on {n}") for n in ("pi0", "pi1", "pi2")}


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(pi_role.PI_DEFAULTS, "listen_wait_seconds", 5)


def vps_host(name: str, *, fail_on: str | None = None) -> FakeHost:
    return FakeHost(name, [("|| echo MISSING", ACCOUNT), ("ssh_host_", f"cur ssh-ed25519 AAAA{name}key\n"),
                           ("ss -Htln", LISTENING), ("permitlisten", PERMITTED), ("authorized_keys", "ABSENT")],
                    [("ss -Htln", LISTENING)], fail_on=fail_on)


def pi_host(inv: Inventory, name: str, pub: str, folders: str) -> FakeHost:
    return FakeHost(name, [(pi_locations.key_path(inv.pis[name]), f"PUB {pub}"),
                           ("-mindepth 1 -maxdepth 1 -type d", folders),
                           ("passwordauthentication|kbd", "passwordauthentication no")])


def fleet(inv: Inventory, keys: dict[str, str], *, old_fails_on: str | None = None) -> dict[str, FakeHost]:
    return {"old": vps_host("old", fail_on=old_fails_on), "new": vps_host("new"),
            "pi0": pi_host(inv, "pi0", keys["pi0"], "new"),
            **{n: pi_host(inv, n, keys[n], "old\nnew") for n in ("pi1", "pi2")}}


def nginx_by_pitunnel(host: FakeHost) -> None:
    """Nginx installed on `host`, by pitunnel (recorded): a teardown with --purge removes it."""
    host.answers[:0] = [("dpkg-query", "nginx installed"), ("pitunnel-state/packages", "nginx")]


def verified(monkeypatch: pytest.MonkeyPatch, failing: dict[str, str] | None = None) -> list[list[str]]:
    """verify's probes replaced: every path passes but the path through new of `failing` (Pi -> why); what
    each call was asked (the Pis and their VPSes) is returned."""
    asked: list[list[str]] = []

    def fake(play: Play) -> list[PathReport]:
        reports = []
        for pi in play.selected(list(play.inventory.pis.values())):
            for vps in pi.all_vps:
                report = PathReport(pi.name, vps=vps)
                why = (failing or {}).get(pi.name) if vps == "new" else None  # its path through old works
                report.add("ssh", why is None, why or "ssh through it answered")
                reports.append(report)
        asked.append([f"{r.pi}@{r.vps}" for r in reports])
        return reports

    monkeypatch.setattr(migrate_module, "verify", fake)
    return asked


MOVED = INVENTORY.replace("vps: old    # moves soon", "vps: new    # moves soon").replace(
    "pi2: {address: 10.0.0.2, vps: old,", "pi2: {address: 10.0.0.2, vps: new,")


def moved_and_old_torn_down(inv: Inventory, keys: dict[str, str]) -> None:
    """Run the move to new on a fleet in the state of `inv`, and see it finish: the inventory says new, no state
    file is left, and old's side is torn down."""
    hosts = fleet(inv, keys)
    nginx_by_pitunnel(hosts["old"])
    play = play_on(inv, hosts)
    migrate(play, "new", keep_old=False)
    assert play.failed == set()
    assert inv.path.read_text() == MOVED
    assert not state_file(inv.path).exists()
    assert hosts["old"].applied("apt-get purge -y -q --autoremove nginx")


def key_of(keys: dict[str, str], name: str) -> str:
    return keys[name].split()[1]


def test_a_move_of_every_pi_of_old_brings_both_paths_up_verifies_rewrites_and_tears_old_down(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    asked = verified(monkeypatch)
    hosts = fleet(inv, keys)
    nginx_by_pitunnel(hosts["old"])
    play = play_on(inv, hosts)
    migrate(play, "new", keep_old=False)
    assert play.failed == set()
    assert len(asked) == 1 and {"pi1@new", "pi2@new", "pi1@old", "pi2@old"} <= set(asked[0])  # both paths, once
    # the inventory: only the two values changed, comments kept; the old file beside it; no state left
    assert inv.path.read_text() == MOVED
    assert (tmp_path / "hosts.yml.bak").read_text() == INVENTORY
    assert [p.all_vps for p in load_inventory(inv.path).pis.values()] == [("new",), ("new",), ("new",)]
    assert not state_file(inv.path).exists()
    for name in ("pi1", "pi2"):  # each Pi: both paths up, then the new one alone
        pi = hosts[name]
        started = [i for i, op in enumerate(pi.ops) if "systemctl start pitunnel@" in op]
        assert [pi.ops[i].split("start ")[1].strip() for i in started] == [
            "pitunnel@old.service", "pitunnel@new.service", "pitunnel@new.service"]
        assert key_of(keys, name) in sent(hosts["new"])  # NEW authorises it
    assert hosts["pi0"].applied("systemctl start pitunnel@new.service")
    assert not hosts["pi0"].applied("pitunnel@old")
    # OLD's side torn down, with the packages pitunnel installed there
    assert hosts["old"].applied("apt-get purge -y -q --autoremove nginx")
    assert not hosts["new"].applied("apt-get purge")
    out = lines(capsys)
    in_order(out, [
        "changed pi1 service pitunnel@old.service - enable, start",
        "changed pi1 service pitunnel@new.service - enable, start",
        "ok pi1 migrate: verified through new - every check of pi1 via new",
        "ok pi2 migrate: verified through new - every check of pi2 via new",
        f"changed new inventory says the new VPS - {inv.path}: vps: new for pi1, pi2 (as it was: hosts.yml.bak)",
        "ok pi1 old: tunnel retired (no longer its VPS) - disabled, inactive",
        "ok new migrate to new done - pi1, pi2 through new only; old: pitunnel's side torn down",
    ])
    assert any(line.startswith("changed old packages purged nginx") for line in out)
    purged = next(i for i, op in enumerate(hosts["old"].ops) if "apt-get purge" in op)
    assert not any("useradd" in op for op in hosts["old"].ops[purged:])  # torn down, not provisioned again
    assert sum("pitunnel@new.service" in op and "systemctl start" in op for op in hosts["pi0"].ops) == 1
    assert sum(line.startswith("changed old sshd Match block") for line in out) == 1
    assert sum(line.startswith("changed new sshd Match block") for line in out) == 1


def test_check_mode_sends_no_change_writes_nothing_and_says_the_rest_of_the_plan(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    asked = verified(monkeypatch)
    hosts = fleet(inv, keys)
    play = play_on(inv, hosts, check=True)
    migrate(play, "new", keep_old=False)
    assert asked == []  # nothing to verify: nothing was brought up
    assert not any(h.applied("systemctl") or h.applied("useradd") or h.applied("pitunnel_enter") for h in hosts.values())
    assert inv.path.read_text() == INVENTORY
    assert not state_file(inv.path).exists() and not (tmp_path / "hosts.yml.bak").exists()
    out = lines(capsys)
    assert "would change pi1 service pitunnel@new.service - enable, start" in out  # the plan names the new path
    assert ("new then: each Pi verified through new, the inventory rewritten to `vps: new`, and old left (its side "
            "torn down unless Pis stay on it or --keep-old)") in out
    assert not any("migrate to new done" in line or "inventory says" in line for line in out)


def test_check_mode_of_an_unfinished_move_names_the_pis_left_to_retire(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    half = INVENTORY.replace("vps: old    # moves soon", "vps: new    # moves soon")
    inv = load(tmp_path, half, {"hosts.migrate.yml": "from: old\nto: new\npis: [pi1]\n"})
    verified(monkeypatch)
    hosts = fleet(inv, keys)
    migrate(play_on(inv, hosts, check=True), "new", keep_old=False)
    assert state_file(inv.path).read_text() == "from: old\nto: new\npis: [pi1]\n"
    assert inv.path.read_text() == half
    out = lines(capsys)
    assert "new then: pi1 provisioned on new alone, and old left" in out


def test_keep_old_takes_the_moved_pis_keys_off_old_and_keeps_its_side(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    verified(monkeypatch)
    hosts = fleet(inv, keys)
    nginx_by_pitunnel(hosts["old"])
    play = play_on(inv, hosts)
    migrate(play, "new", keep_old=True)
    assert play.failed == set()
    assert inv.path.read_text() == MOVED
    assert not hosts["old"].applied("apt-get purge") and not hosts["old"].applied("userdel")
    last = [op for op in hosts["old"].ops if "n=authorized_keys\n" in op][-1]  # the keys old keeps: none of theirs
    assert key_of(keys, "pi1") in sent(hosts["old"])  # it had them while both paths were up
    assert not any(key_of(keys, n) in sent(_only(last)) for n in ("pi1", "pi2"))
    out = lines(capsys)
    assert "ok new migrate to new done - pi1, pi2 through new only; old: kept (--keep-old)" in out
    # old provisioned again after the keys went (its Nginx then serves the Pis left on it), new not
    assert sum(line.startswith("changed old sshd Match block") for line in out) == 2
    assert sum(line.startswith("changed new sshd Match block") for line in out) == 1
    assert not any(line.startswith("changed old packages purged") for line in out)


def _only(op: str) -> FakeHost:
    """A host that was sent this one op (to read what it wrote)."""
    host = FakeHost("one")
    host.ops.append(op)
    return host


def test_a_pi_left_on_old_keeps_old_serving_it(tmp_path: Path, keys: dict[str, str],
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    asked = verified(monkeypatch)
    hosts = fleet(inv, keys)
    play = play_on(inv, hosts, limit=frozenset({"pi1"}))
    migrate(play, "new", keep_old=False)
    assert play.failed == set()
    assert "pi2" not in " ".join(asked[0])  # only the Pi selected is moved
    assert inv.path.read_text() == INVENTORY.replace("vps: old    # moves soon", "vps: new    # moves soon")
    assert hosts["pi2"].scripts == [] and hosts["pi0"].scripts == []
    assert not hosts["old"].applied("apt-get purge")
    last = [op for op in hosts["old"].ops if "n=authorized_keys\n" in op][-1]
    assert key_of(keys, "pi1") not in sent(_only(last))
    out = lines(capsys)
    assert "ok new migrate to new done - pi1 through new only; old: still serves pi2" in out
    assert sum(line.startswith("changed old sshd Match block") for line in out) == 2


def test_a_pi_that_fails_verify_stays_on_old_and_the_others_move(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    verified(monkeypatch, {"pi2": "connection refused"})
    hosts = fleet(inv, keys)
    play = play_on(inv, hosts)
    migrate(play, "new", keep_old=False)
    assert "pi2" in play.failed and "pi1" not in play.failed
    assert inv.path.read_text() == INVENTORY.replace("vps: old    # moves soon", "vps: new    # moves soon")
    assert not hosts["old"].applied("apt-get purge")  # pi2 still uses it
    assert not state_file(inv.path).exists()
    out = lines(capsys)
    in_order(out, [
        "ok pi1 migrate: verified through new - every check of pi1 via new",
        "failed pi2 migrate: verified through new - ssh: connection refused: it stays on old (both paths up); "
        "fix it and rerun",
        f"changed new inventory says the new VPS - {inv.path}: vps: new for pi1 (as it was: hosts.yml.bak)",
        "ok new migrate to new done - pi1 through new only; old: still serves pi2",
    ])


def test_a_move_stopped_on_old_is_finished_by_the_rerun_from_its_state_file(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    asked = verified(monkeypatch)
    hosts = fleet(inv, keys, old_fails_on="apt-get purge")
    nginx_by_pitunnel(hosts["old"])
    play = play_on(inv, hosts)
    migrate(play, "new", keep_old=False)
    assert play.failed == {"old"}
    assert inv.path.read_text() == MOVED  # the inventory says new already: only the state file names old now
    state = state_file(inv.path).read_text()
    assert state.startswith("# An unfinished `invoke migrate`: rerun `invoke migrate --to new` to complete it.\n")
    assert "from: old\nto: new\npis:\n- pi1\n- pi2\n" in state
    first = lines(capsys)
    assert not any("migrate to new done" in line for line in first)
    # the rerun: read back, the moved Pis provisioned on new alone, old torn down, the state file gone
    inv = load_inventory(inv.path)
    hosts = fleet(inv, keys)
    nginx_by_pitunnel(hosts["old"])
    play = play_on(inv, hosts)
    migrate(play, "new", keep_old=False)
    assert play.failed == set()
    assert len(asked) == 1  # nothing verified again: the rest is retiring
    assert not state_file(inv.path).exists()
    assert hosts["old"].applied("apt-get purge -y -q --autoremove nginx")
    assert not any(h.applied("systemctl start pitunnel@old") for h in hosts.values())  # old's paths stay down
    assert hosts["pi1"].applied("systemctl start pitunnel@new") and hosts["pi2"].applied("systemctl start pitunnel@new")
    out = lines(capsys)
    assert not any("verified through" in line or "inventory says" in line for line in out)
    assert "ok pi2 old: tunnel retired (no longer its VPS) - disabled, inactive" in out
    assert "ok new migrate to new done - pi1, pi2 through new only; old: pitunnel's side torn down" in out


def test_a_move_that_died_between_the_state_file_and_the_inventory_rewrites_the_inventory_on_the_rerun(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The rewrite writes the state file first and the inventory last: a run that died in between left a state
    file naming pi1 and pi2 while the inventory still has them on old. The rerun must still rewrite the inventory
    (it had skipped the rewrite, retired nothing and said done, both paths left up)."""
    inv = load(tmp_path, INVENTORY)
    migrate_module.write_state(inv.path, "old", "new", ["pi1", "pi2"])
    verified(monkeypatch)
    moved_and_old_torn_down(inv, keys)
    in_order(lines(capsys), [
        f"changed new inventory says the new VPS - {inv.path}: vps: new for pi1, pi2 (as it was: hosts.yml.bak)",
        "ok pi1 old: tunnel retired (no longer its VPS) - disabled, inactive",
        "ok new migrate to new done - pi1, pi2 through new only; old: pitunnel's side torn down",
    ])


def test_a_finished_move_rerun_has_no_pi_to_move(tmp_path: Path, keys: dict[str, str],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, MOVED)
    verified(monkeypatch)
    hosts = fleet(inv, keys)
    migrate(play_on(inv, hosts), "new", keep_old=False)
    assert all(h.scripts == [] for h in hosts.values())
    assert "new migrate: no Pi to move (every selected Pi is on new, or on several VPSes)" in lines(capsys)


SPARE = INVENTORY.replace("  new: {address: 198.51.100.20}\n",
                          "  new: {address: 198.51.100.20}\n  spare: {address: 192.0.2.30}\n").replace(
    "pi2: {address: 10.0.0.2, vps: old,", "pi2: {address: 10.0.0.2, vps: spare,")


@pytest.mark.parametrize("text, files, to, refusal", [
    (INVENTORY, {}, "nowhere", "--to nowhere: no VPS of that name in {inventory} (VPSes: old, new): define it under "
                               "vps: first"),
    (INVENTORY, {"hosts.migrate.yml": "from: old\nto: elsewhere\npis: [pi1]\n"}, "new",
     "a move to elsewhere is unfinished ({state}): rerun `invoke migrate --to elsewhere` first"),
    (INVENTORY, {"hosts.migrate.yml": "just: text\n"}, "new",
     "{state}: not a migrate state file (from:, to:, pis:): remove it if no move is under way"),
    (SPARE, {}, "new", "the Pis selected are on several VPSes (old, spare): move one VPS's Pis at a time (--limit)"),
    (INVENTORY.replace("remote_port: 20022", "remote_port: 20021"), {}, "new",
     "pis.pi1.tunnels.ssh.remote_port 20021 is taken on new: give it another port (or `auto`) in the inventory, "
     "then rerun migrate"),
])
def test_a_move_that_cannot_start_is_refused_before_any_host(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        text: str, files: dict[str, str], to: str, refusal: str) -> None:
    inv = load(tmp_path, text, files)
    asked = verified(monkeypatch)
    hosts = {**fleet(inv, keys), "spare": vps_host("spare")}
    with pytest.raises(MigrateRefused) as refused:
        migrate(play_on(inv, hosts), to, keep_old=False)
    assert str(refused.value) == refusal.format(inventory=inv.path, state=state_file(inv.path))
    assert all(h.scripts == [] for h in hosts.values()) and asked == []
    assert inv.path.read_text() == text


@pytest.mark.parametrize("step, state_left", [(1, False), (2, False), (3, True), (4, True)])
def test_a_move_killed_after_any_step_is_finished_by_the_rerun(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch, step: int, state_left: bool,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Killed after PROVISION (1), VERIFY (2), REWRITE (3) or the Pis' RETIRE (4): what the run left on the
    laptop, then a rerun that completes the move."""
    inv = load(tmp_path, INVENTORY)
    verified(monkeypatch)
    signals = kill_after(monkeypatch, step)
    with pytest.raises(Killed):
        migrate(play_on(inv, fleet(inv, keys)), "new", keep_old=False)
    assert signals == [signal.SIGKILL]
    assert state_file(inv.path).exists() is state_left
    assert inv.path.read_text() == (MOVED if state_left else INVENTORY)  # the state file and the rewrite go together
    monkeypatch.delenv(reconcile.KILL_AFTER)
    moved_and_old_torn_down(load_inventory(inv.path), keys)
    assert "ok new migrate to new done - pi1, pi2 through new only; old: pitunnel's side torn down" in lines(capsys)


def test_an_auto_port_taken_on_new_is_mapped_said_and_recorded_there(
        tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    text = INVENTORY.replace("remote_port: 20021", "remote_port: auto").replace("remote_port: 20022", "remote_port: auto")
    inv = load(tmp_path, text)
    taken = inv.pis["pi0"].tunnels[0].remote_port
    assert inv.pis["pi1"].tunnels[0].remote_port == taken  # each VPS hands out its own ports: the same number
    monkeypatch.setattr(sys.modules[__name__], "LISTENING",
                        "".join(f"LISTEN 0 128 127.0.0.1:{p} 0.0.0.0:*\n" for p in (taken, taken + 1, 20023)))
    monkeypatch.setattr(sys.modules[__name__], "PERMITTED", f"permitlisten 127.0.0.1:{taken} 127.0.0.1:{taken + 1} "
                                                            "127.0.0.1:20023")
    verified(monkeypatch)
    play = play_on(inv, fleet(inv, keys))
    migrate(play, "new", keep_old=False)
    assert play.failed == set()
    out = lines(capsys)
    assert f"new pi1/ssh: port {taken} is taken on new: it gets {taken + 1} there" in out
    assert f"ok pi1 tunnel listening on the VPS - new: 127.0.0.1:{taken + 1} (after 0.5s)" in out
    moved = load_inventory(inv.path)
    assert moved.pis["pi1"].all_vps == ("new",) and moved.pis["pi1"].tunnels[0].remote_port == taken + 1
    assert moved.pis["pi0"].tunnels[0].remote_port == taken
    recorded = yaml.safe_load(ports_file(inv.path).read_text())
    assert recorded.get("old") in (None, {}) and recorded["new"]["pi1/ssh"] == taken + 1


def test_the_inventory_rewrite_says_changed_once_and_ok_when_the_file_says_new_already(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """REWRITE run twice for pi1 (the second time the file says `vps: new` already, as after an edit by hand during
    the run): the file is written once, and the second line says ok."""
    inv = load(tmp_path, INVENTORY)
    flow = migrate_module.Migration(play_on(inv, {}), "old", "new", [inv.pis["pi1"]], keep_old=False)
    state = migrate_module.Move((), (), verified=("pi1",))
    flow.rewrite(state)
    moved = inv.path.read_text()
    flow.rewrite(state)
    assert inv.path.read_text() == moved == INVENTORY.replace("vps: old    # moves soon", "vps: new    # moves soon")
    said = f"inventory says the new VPS - {inv.path}: vps: new for pi1 (as it was: hosts.yml.bak)"
    assert [l for l in lines(capsys) if "inventory says" in l] == [f"changed new {said}", f"ok new {said}"]


def steps_from(move: migrate_module.Move) -> list[migrate_module.Step]:
    return [s for s, _ in reconcile.plan(move, migrate_module.next_step, migrate_module.after)]


S = migrate_module.Step


@pytest.mark.parametrize("move, steps", [
    (migrate_module.Move(("pi1", "pi2"), ()), [S.PROVISION, S.VERIFY, S.REWRITE, S.RETIRE, S.LEAVE, S.DONE]),
    (migrate_module.Move((), ("pi1",)), [S.RETIRE, S.LEAVE, S.DONE]),  # a rerun after REWRITE
    (migrate_module.Move(("pi2",), ("pi1",)), [S.PROVISION, S.VERIFY, S.REWRITE, S.RETIRE, S.LEAVE, S.DONE]),
    # pi2 failed VERIFY and stays on OLD: it is not brought up again; pi1, rewritten, is retired
    (migrate_module.Move(("pi2",), ("pi1",), frozenset({S.PROVISION, S.VERIFY, S.REWRITE}), ("pi1",)),
     [S.RETIRE, S.LEAVE, S.DONE]),
    # no Pi verified and none pending: nothing to rewrite or retire
    (migrate_module.Move(("pi1",), (), frozenset({S.PROVISION, S.VERIFY})), [S.HALTED]),
    (migrate_module.Move((), ("pi1",), frozenset({S.RETIRE}), halted=True), [S.HALTED]),
    (migrate_module.Move((), (), frozenset({S.RETIRE, S.LEAVE})), [S.DONE]),  # the state file gone at the end
])
def test_the_next_steps_of_a_move_from_its_state(move: migrate_module.Move, steps: list[migrate_module.Step]) -> None:
    assert steps_from(move) == steps


def test_verify_leads_to_every_moving_pi_verified_and_rewrite_to_them_pending() -> None:
    move = migrate_module.after(migrate_module.Move(("pi1", "pi2"), ("pi0",), frozenset({S.PROVISION})), S.VERIFY)
    assert move.verified == ("pi1", "pi2") and move.done == {S.PROVISION, S.VERIFY}
    move = migrate_module.after(move, S.REWRITE)
    assert move.moving == () and move.pending == ("pi0", "pi1", "pi2")
    assert migrate_module.after(move, S.LEAVE).pending == ()
