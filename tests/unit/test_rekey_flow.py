"""`invoke rotate-vps-hostkey` driven end to end on scripted hosts (tests/unit/fake_hosts.py) that remember what
they were sent: the VPS's host keys staged, switched and cleaned, each Pi's pins (old and new, then new alone),
the laptop's known_hosts, what each step reports, check mode, the refusals, and a half-done run finished. The
lab proves the same on real sshd (tests/lab/test_daytwo.py); these prove the driver without one."""

from __future__ import annotations

import base64
import os
import re
import signal
from pathlib import Path

import pytest

from pitunnel import reconcile
from pitunnel.inventory import Inventory
from pitunnel.remote import Result, Unreachable
from pitunnel.roles.pi.locations import vps_config_dir
from pitunnel.roles.rekey import rotate_vps_hostkey
from tests.unit.fake_hosts import FakeHost, in_order, lines, load, play_on

INVENTORY = """
settings: {laptop_key: null, known_hosts: kh}
vps:
  main: {address: 203.0.113.1}
  spare: {address: 203.0.113.2, port: 2222}
pis:
  alpha: {address: 10.0.0.2, vps: main, tunnels: {ssh: {type: ssh, remote_port: 20022}}}
  beta: {address: 10.0.0.3, vps: main, tunnels: {ssh: {type: ssh, remote_port: 20023}}}
  gamma: {address: 10.0.0.4, vps: spare, tunnels: {ssh: {type: ssh, remote_port: 20024}}}
"""

OLD = ("ssh-ed25519 AAAAold1", "ecdsa-sha2-nistp256 AAAAold2")
NEW = ("ssh-ed25519 AAAAnew1", "ecdsa-sha2-nistp256 AAAAnew2")
ED25519 = base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + bytes(range(32))).decode()  # a well-formed key
OTHER = "other.example ssh-ed25519 AAAAsomeoneelse"  # a line of the user's own: never touched


class KeyedVps(FakeHost):
    """A VPS whose host keys follow the scripts it is sent: ssh-keygen stages NEW, the install switches sshd to
    them, the restore brings the old ones back, the drop forgets the staged copies."""

    def __init__(self, name: str, current: tuple[str, ...], staged: tuple[str, ...] | None = None, *,
                 fresh_login: bool = True, fail: str | None = None) -> None:
        super().__init__(name, fresh_login=fresh_login)
        self.current, self.staged, self.old, self.fail = current, staged, current, fail

    def keys(self) -> str:
        return "".join(f"cur {k} root@vps\n" for k in self.current) + (
            "" if self.staged is None else "STAGED\n" + "".join(f"new {k} root@vps\n" for k in self.staged))

    def run(self, script: str, **kwargs: object) -> Result:  # type: ignore[override]
        self.commands = [('echo "cur $(cat', self.keys())]
        result = super().run(script, **kwargs)  # type: ignore[arg-type]
        if self.fail is not None and self.fail in script:
            return Result(1, "", "line 1\nssh-keygen: no space left on device\n")
        if "ssh-keygen" in script:
            self.staged = NEW
        elif "systemctl reload ssh" in script and "install -m 600" in script:
            self.current = self.staged or self.current
        elif "host-keys-old/ssh_host_*_key " in script:  # the restore
            self.current = self.old
        elif script.startswith("rm -rf ") and "host-keys-next" in script:
            self.staged = None
        return result


class PinningPi(FakeHost):
    """A Pi whose pins file for main is what the last op wrote to it (None: unreachable)."""

    def __init__(self, name: str, pins: tuple[str, ...] | None, *, fail_on: str | None = None,
                 vps: str = "main", known: str = "203.0.113.1") -> None:
        super().__init__(name, fail_on=fail_on)
        self.pins, self.path, self.known = pins, f"{vps_config_dir(vps)}/known_hosts", known
        self.written: list[tuple[str, ...]] = []  # each pins file sent, the keys in it

    def text(self) -> str:
        return "".join(f"{self.known} {k}\n" for k in self.pins or ())

    def answer(self, snippet: str) -> str:
        if f"base64 -w0 {self.path}" in snippet:
            return f"root:root:644\n{base64.b64encode(self.text().encode()).decode()}"
        return super().answer(snippet)

    def run(self, script: str, **kwargs: object) -> Result:  # type: ignore[override]
        if self.pins is None:
            raise Unreachable(f"{self.name}: no route to host")
        self.commands = [(f"base64 -w0 {self.path}", self.answer(f"base64 -w0 {self.path}"))]
        result = super().run(script, **kwargs)  # type: ignore[arg-type]
        for blob in re.findall(r"printf %s (\S+) \| base64 -d > new", script if "n=known_hosts\n" in script else ""):
            if self.fail_on is None or self.fail_on not in script:
                text = base64.b64decode(blob).decode()
                self.pins = tuple(" ".join(line.split()[1:3]) for line in text.splitlines())
                self.written.append(self.pins)
        return result


def laptop(inv: Inventory) -> list[str]:
    return inv.settings.known_hosts.read_text().splitlines()


def fleet(tmp_path: Path, *, vps: KeyedVps | None = None, pins: tuple[str, ...] | None = OLD,
          laptop_keys: tuple[str, ...] = OLD, inventory: str = INVENTORY) -> tuple[Inventory, dict[str, FakeHost]]:
    (tmp_path / "kh").write_text(OTHER + "\n" + "".join(f"203.0.113.1 {k}\n" for k in laptop_keys))
    inv = load(tmp_path, inventory)
    hosts: dict[str, FakeHost] = {"main": vps or KeyedVps("main", OLD), "alpha": PinningPi("alpha", OLD),
                                  "beta": PinningPi("beta", pins), "spare": KeyedVps("spare", OLD),
                                  "gamma": PinningPi("gamma", OLD, vps="spare", known="[203.0.113.2]:2222")}
    return inv, hosts


def changes(host: FakeHost) -> list[str]:
    """What `host` was sent other than the flow's reads (the VPS's host keys, a Pi's pins)."""
    return [s for s in host.ops if 'echo "cur $(cat' not in s and not s.startswith("if [ -L ")]


def vps_scripts(host: FakeHost) -> list[str]:
    """What the VPS was sent other than reads, each named by what it does."""
    names = {"ssh-keygen": "stage", "install -m 600": "switch", "host-keys-old/ssh_host_*_key ": "restore",
             "rm -rf /": "clean"}
    return [next((n for k, n in names.items() if k in s), s) for s in changes(host)]


def test_a_rekey_stages_pins_both_switches_unpins_and_cleans_in_that_order(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path)
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert play.failed == set()
    vps = hosts["main"]
    assert isinstance(vps, KeyedVps)
    assert vps_scripts(vps) == ["stage", "switch", "clean"]
    assert vps.current == NEW and vps.staged is None
    assert "systemctl reload ssh\n" in changes(vps)[1] and "sshd -t\n" in changes(vps)[1]  # a reload: sessions kept
    assert vps.logins == [False]  # one fresh login after the switch, with the laptop's key
    for name in ("alpha", "beta"):  # each Pi: old and new, then new alone
        pi = hosts[name]
        assert isinstance(pi, PinningPi)
        assert pi.written == [OLD + NEW, NEW]
    assert hosts["gamma"].scripts == [] and hosts["spare"].scripts == []  # another VPS's fleet: not touched
    assert laptop(inv) == [OTHER, *(f"203.0.113.1 {k}" for k in NEW)]
    out = lines(capsys)
    in_order(out, [
        "changed main host key: make new host keys on the VPS (staged, not in use) - no re-key under way",
        "changed main host key: pin the new host keys beside the old ones on every Pi and in the laptop's "
        "known_hosts - 2 new keys pinned beside 2 old ones",
        "changed main host key: switch sshd to the new host keys (reload: sessions kept), proven by a fresh login "
        "- a fresh login from the laptop checked the new key",
        "changed main host key: unpin the old host keys on every Pi and in the laptop's known_hosts - the Pis and "
        "the laptop accept 2 keys, all new",
        "changed main host key: remove the staged copies and the old private keys from the VPS - the old keys are "
        "pinned nowhere",
        "ok main host keys re-keyed - 2 keys, pinned by 2 Pi(s) and the laptop",
    ])
    assert sum("alpha" in line and "main: VPS host key pinned" in line for line in out) == 2


def test_the_laptop_known_hosts_holds_both_key_sets_between_pin_and_unpin(tmp_path: Path) -> None:
    inv, hosts = fleet(tmp_path)
    seen: list[list[str]] = []
    vps = hosts["main"]
    assert isinstance(vps, KeyedVps)
    original = vps.can_log_in_fresh

    def login(*, use_password: bool = True, within: float = 10) -> bool:
        seen.append(laptop(inv))  # what the laptop accepts at the moment of the fresh login
        return original(use_password=use_password, within=within)

    vps.can_log_in_fresh = login  # type: ignore[method-assign]
    rotate_vps_hostkey(play_on(inv, hosts, limit=frozenset({"main"})))
    assert seen == [[OTHER, *(f"203.0.113.1 {k}" for k in OLD + NEW)]]


def test_check_mode_lists_the_five_steps_and_sends_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path)
    before = laptop(inv)
    play = play_on(inv, hosts, check=True, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert play.failed == set()
    assert all(changes(h) == [] for h in hosts.values())
    assert hosts["main"].logins == []
    assert laptop(inv) == before
    out = lines(capsys)
    in_order(out, [
        "would change main host key: make new host keys on the VPS (staged, not in use) - no re-key under way",
        "would change main host key: pin the new host keys beside the old ones on every Pi and in the laptop's "
        "known_hosts - not every Pi (or the laptop) accepts the new keys yet",
        "would change main host key: switch sshd to the new host keys (reload: sessions kept), proven by a fresh "
        "login - every Pi and the laptop accept both",
        "would change main host key: unpin the old host keys on every Pi and in the laptop's known_hosts - sshd "
        "offers the new keys",
        "would change main host key: remove the staged copies and the old private keys from the VPS - the old keys "
        "are pinned nowhere",
        "ok main host key: done",
    ])
    assert not any(line.startswith("changed") for line in out)


def test_a_run_killed_after_the_pins_is_finished_by_the_next_from_the_switch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path, vps=KeyedVps("main", OLD, NEW), pins=OLD + NEW, laptop_keys=OLD + NEW)
    hosts["alpha"] = PinningPi("alpha", OLD + NEW)
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert play.failed == set()
    assert vps_scripts(hosts["main"]) == ["switch", "clean"]  # no new keys made: the staged ones are used
    for name in ("alpha", "beta"):
        pi = hosts[name]
        assert isinstance(pi, PinningPi) and pi.written == [NEW]
    assert laptop(inv) == [OTHER, *(f"203.0.113.1 {k}" for k in NEW)]
    out = lines(capsys)
    assert not any("make new host keys" in line for line in out)
    assert not any("beside the old ones" in line for line in out)
    assert "ok main host keys re-keyed - 2 keys, pinned by 2 Pi(s) and the laptop" in out


def test_a_run_killed_after_the_switch_unpins_and_cleans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path, vps=KeyedVps("main", NEW, NEW), pins=OLD + NEW, laptop_keys=OLD + NEW)
    hosts["alpha"] = PinningPi("alpha", OLD + NEW)
    rotate_vps_hostkey(play_on(inv, hosts, limit=frozenset({"main"})))
    assert vps_scripts(hosts["main"]) == ["clean"]
    assert hosts["main"].logins == []  # the switch is behind it: no second one
    out = lines(capsys)
    in_order(out, ["changed main host key: unpin the old host keys on every Pi and in the laptop's known_hosts - "
                   "the Pis and the laptop accept 2 keys, all new",
                   "changed main host key: remove the staged copies and the old private keys from the VPS - the old "
                   "keys are pinned nowhere",
                   "ok main host keys re-keyed - 2 keys, pinned by 2 Pi(s) and the laptop"])


def test_a_run_killed_after_the_unpin_only_cleans_and_then_is_done(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path, vps=KeyedVps("main", NEW, NEW), pins=NEW, laptop_keys=NEW)
    hosts["alpha"] = PinningPi("alpha", NEW)
    rotate_vps_hostkey(play_on(inv, hosts, limit=frozenset({"main"})))
    assert vps_scripts(hosts["main"]) == ["clean"]
    assert all(isinstance(hosts[n], PinningPi) and hosts[n].written == [] for n in ("alpha", "beta"))  # type: ignore[attr-defined]
    out = lines(capsys)
    assert "ok main host keys re-keyed - 2 keys, pinned by 2 Pi(s) and the laptop" in out
    assert sum(line.startswith("changed main host key:") for line in out) == 1


def test_a_pi_not_reached_stops_the_rekey_before_anything_is_made(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path, pins=None)
    before = laptop(inv)
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert changes(hosts["main"]) == changes(hosts["alpha"]) == []
    assert laptop(inv) == before
    assert play.failed == {"beta", "main"}
    out = lines(capsys)
    assert "unreachable beta connect - beta: no route to host" in out
    assert ("failed main host key: read the Pis' pins - beta not reached: every Pi of main must pin the new keys "
            "before sshd switches (nothing switched; rerun once they are reachable)") in out
    assert not any(line.startswith("changed") for line in out)


def test_a_pi_that_does_not_take_the_pins_stops_the_rekey_before_the_switch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path)
    hosts["beta"] = PinningPi("beta", OLD, fail_on="known_hosts")
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert vps_scripts(hosts["main"]) == ["stage"]  # staged, never switched
    vps = hosts["main"]
    assert isinstance(vps, KeyedVps) and vps.current == OLD
    assert "main" in play.failed
    out = lines(capsys)
    assert ("failed main host key: pin - not every Pi took the pins (see above): rerun once they are reachable"
            in out)
    assert not any("switch sshd" in line for line in out)


def test_a_failed_fresh_login_after_the_switch_brings_the_old_keys_back(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path, vps=KeyedVps("main", OLD, fresh_login=False))
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    vps = hosts["main"]
    assert isinstance(vps, KeyedVps)
    assert vps_scripts(vps) == ["stage", "switch", "restore"]
    assert vps.current == OLD and "systemctl reload ssh" in changes(vps)[-1]
    for name in ("alpha", "beta"):  # the old keys stay pinned beside the new: nothing refuses anything
        pi = hosts[name]
        assert isinstance(pi, PinningPi) and pi.written == [OLD + NEW]
    assert laptop(inv) == [OTHER, *(f"203.0.113.1 {k}" for k in OLD + NEW)]
    assert play.failed == {"main"}
    out = lines(capsys)
    assert ("failed main host key: switch sshd to the new host keys (reload: sessions kept), proven by a fresh login "
            "- a fresh login failed after the switch: the old host keys are back") in out
    assert not any("unpin the old" in line for line in out)


def test_a_failed_script_names_the_step_and_its_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path, vps=KeyedVps("main", OLD, fail="ssh-keygen"))
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert play.failed == {"main"}
    assert all(changes(hosts[n]) == [] for n in ("alpha", "beta"))
    out = lines(capsys)
    assert ("failed main host key: make new host keys on the VPS (staged, not in use) - line 1 ssh-keygen: no space "
            "left on device") in " ".join(out)


def test_a_vps_pinned_in_the_inventory_is_refused_with_nothing_sent(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pinned = INVENTORY.replace("main: {address: 203.0.113.1}",
                               f"main: {{address: 203.0.113.1, host_key: 'ssh-ed25519 {ED25519}'}}")
    inv, hosts = fleet(tmp_path, inventory=pinned)
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert play.failed == {"main"}
    assert all(changes(h) == [] for h in hosts.values())
    out = lines(capsys)
    assert ("failed main host key: re-key - the inventory pins this VPS's host_key: pitunnel cannot change that file; "
            "remove host_key (known_hosts then checks the key), re-key, and pin the new key after") in out


def test_each_selected_vps_is_rekeyed_with_its_own_pis_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path)
    play = play_on(inv, hosts, limit=frozenset({"spare"}))
    rotate_vps_hostkey(play)
    assert play.failed == set()
    assert hosts["main"].scripts == [] and hosts["alpha"].scripts == [] and hosts["beta"].scripts == []
    assert vps_scripts(hosts["spare"]) == ["stage", "switch", "clean"]
    gamma = hosts["gamma"]
    assert isinstance(gamma, PinningPi) and len(gamma.written) == 2
    out = lines(capsys)
    assert "ok spare host keys re-keyed - 2 keys, pinned by 1 Pi(s) and the laptop" in out
    # the laptop's lines for spare (port 2222) are its own, named [address]:port
    assert "[203.0.113.2]:2222 ssh-ed25519 AAAAnew1" in laptop(inv)
    assert "203.0.113.1 ssh-ed25519 AAAAold1" in laptop(inv)


class Killed(BaseException):
    """What the test's stand-in for SIGKILL raises: the run stops right there, as if killed."""


def kill_after(monkeypatch: pytest.MonkeyPatch, step: int) -> list[int]:
    """PITUNNEL_TEST_KILL_AFTER_STEP=step, with the kill replaced by Killed (the signals sent are returned)."""
    sent: list[int] = []

    def kill(pid: int, sig: int) -> None:
        assert pid == os.getpid()
        sent.append(sig)
        raise Killed

    monkeypatch.setenv(reconcile.KILL_AFTER, str(step))
    monkeypatch.setattr(os, "kill", kill)
    return sent


@pytest.mark.parametrize("step", [1, 2, 3, 4])  # after the 5th (CLEAN) the re-key is done: a rerun starts another
def test_a_run_killed_after_any_step_is_finished_by_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: int, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path)
    signals = kill_after(monkeypatch, step)
    with pytest.raises(Killed):
        rotate_vps_hostkey(play_on(inv, hosts, limit=frozenset({"main"})))
    assert signals == [signal.SIGKILL]
    first = lines(capsys)
    assert sum(line.startswith("changed main host key:") for line in first) == step
    monkeypatch.delenv(reconcile.KILL_AFTER)
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert play.failed == set()
    vps = hosts["main"]
    assert isinstance(vps, KeyedVps) and vps.current == NEW and vps.staged is None
    assert vps_scripts(vps) == ["stage", "switch", "clean"]  # each step once over both runs
    assert all(isinstance(hosts[n], PinningPi) and hosts[n].pins == NEW for n in ("alpha", "beta"))  # type: ignore[attr-defined]
    assert laptop(inv) == [OTHER, *(f"203.0.113.1 {k}" for k in NEW)]
    out = lines(capsys)
    assert sum(line.startswith("changed main host key:") for line in out) == 5 - step
    assert "ok main host keys re-keyed - 2 keys, pinned by 2 Pi(s) and the laptop" in out


class StuckPi(PinningPi):
    """A Pi that takes every pins file and keeps the old one (a bug somewhere): the flow cannot progress."""

    def run(self, script: str, **kwargs: object) -> Result:  # type: ignore[override]
        pins = self.pins
        result = super().run(script, **kwargs)
        self.pins = pins
        return result


def test_a_flow_that_makes_no_progress_stops_after_its_cap_and_names_the_step(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path)
    hosts["beta"] = StuckPi("beta", OLD)
    play = play_on(inv, hosts, limit=frozenset({"main"}))
    rotate_vps_hostkey(play)
    assert play.failed == {"main"}
    assert vps_scripts(hosts["main"]) == ["stage"]  # never switched: beta does not accept the new keys
    out = lines(capsys)
    assert sum(line.startswith("changed main host key: pin the new host keys beside") for line in out) == 7  # and STAGE
    assert ("failed main host key: re-key - no progress after 8 steps, the last \"pin the new host keys beside the "
            "old ones on every Pi and in the laptop's known_hosts\" (a bug: please report)") in out


def test_every_pi_not_reached_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv, hosts = fleet(tmp_path, pins=None)
    hosts["alpha"] = PinningPi("alpha", None)
    rotate_vps_hostkey(play_on(inv, hosts, limit=frozenset({"main"})))
    assert changes(hosts["main"]) == []
    assert any(line.startswith("failed main host key: read the Pis' pins - alpha, beta not reached: every Pi of main")
               for line in lines(capsys))


def test_a_stale_key_the_laptop_holds_for_the_vps_stays_until_the_unpin(tmp_path: Path) -> None:
    """The laptop's own lines for the VPS are kept while both key sets are pinned (nothing it accepted is taken
    away mid-way); the unpin leaves the new keys alone."""
    stale = "ssh-rsa AAAAstale"
    inv, hosts = fleet(tmp_path, laptop_keys=(*OLD, stale))
    seen: list[list[str]] = []
    vps = hosts["main"]
    assert isinstance(vps, KeyedVps)
    original = vps.can_log_in_fresh

    def login(*, use_password: bool = True, within: float = 10) -> bool:
        seen.append(laptop(inv))
        return original(use_password=use_password, within=within)

    vps.can_log_in_fresh = login  # type: ignore[method-assign]
    rotate_vps_hostkey(play_on(inv, hosts, limit=frozenset({"main"})))
    assert seen == [[OTHER, *(f"203.0.113.1 {k}" for k in (*OLD, stale, *NEW))]]
    assert laptop(inv) == [OTHER, *(f"203.0.113.1 {k}" for k in NEW)]
