"""`invoke rotate-keys` (roles/rotate.py) and `--laptop-key` (roles/laptopkey.py) end to end on scripted hosts
that keep their state (tests/unit/fake_hosts.py underneath): the Pi makes, switches and drops its tunnel keys,
each VPS's authorized_keys is what the last write left, and sshd's log names the key of the session holding
each listener. What a user sees (each step's line) and what each host is sent, in order; check mode; refusals;
a half-done rotation finished; a Pi with two VPSes. The lab proves the same on real hosts
(tests/lab/test_daytwo.py)."""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from pitunnel.inventory import Inventory, Listener
from pitunnel.roles import rotate
from pitunnel.roles.contract import listens
from pitunnel.roles.laptopkey import rotate_laptop_key
from pitunnel.roles.pi import keys as pi_keys
from pitunnel.roles.pi.locations import key_path
from pitunnel.roles.pi.role import PI_DEFAULTS
from pitunnel.roles.vps import keys as vps_keys
from pitunnel.roles.vps.authorized import authorized_line, keys_path
from pitunnel.sshkeys import parse_public_key
from pitunnel.remote import Result
from tests.unit.fake_hosts import FakeHost, in_order, lines, load, play_on
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
    vps: main
    tunnels:
      ssh: {type: ssh, remote_port: 20023}
  duo:
    address: 10.0.0.4
    vps: [main, spare]
    tunnels:
      ssh: {type: ssh, remote_port: 20024}
"""

BLOB_RE = re.compile(r"printf %s (\S+) \| base64 -d > new")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real ed25519 public keys (`type blob`), by name."""
    base = tmp_path_factory.mktemp("keys")
    return {n: " ".join(keygen(base / n, n).split()[:2]) for n in ("old", "new", "beta", "newer", "laptop", "laptop2")}


@pytest.fixture(autouse=True)
def short_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A scripted tunnel is up at once, or never: a failure shows in seconds, not in the real 45."""
    monkeypatch.setitem(PI_DEFAULTS, "listen_wait_seconds", 2)


def fp(line: str) -> str:
    return parse_public_key(line).fingerprint


def file_state(text: str | bytes | None, owner: str = "pitunnel:pitunnel:600") -> str:
    """A file as the file fact reads it."""
    raw = text.encode() if isinstance(text, str) else text
    return "ABSENT" if raw is None else f"{owner}\n{base64.b64encode(raw).decode()}"


def written(ops: list[str], name: str) -> list[str]:
    """Each content an op wrote to the file `name`, in order."""
    return [base64.b64decode(b).decode() for body in ops if f"n={name}\n" in body for b in BLOB_RE.findall(body)]


class Vps(FakeHost):
    """A VPS that keeps its tunnel account's authorized_keys as the last write left it, and whose sshd log
    names, per Pi, the key its sessions logged in with (None: nobody listens)."""

    def __init__(self, name: str, text: str, live: dict[str, str | None], owners: dict[str, str]) -> None:
        super().__init__(name)
        self.text, self.live, self.owners = text, live, owners  # owners: listener spec -> its Pi

    def answer(self, snippet: str) -> str:
        if "ss -Htlnp" in snippet:  # the live-keys fact: one line per listener asked about, its spec first
            pairs = shlex.split(snippet[snippet.index("set -- ") + 7:snippet.index("\n")])
            out = []
            for spec in pairs[::2]:
                key = self.live.get(self.owners.get(spec, ""))
                out.append(spec if key is None else f"{spec} {fp(key)}")
            return "\n".join(out)
        if keys_path() in snippet:
            return file_state(self.text)
        return ""

    def _run(self, script: str, timeout: float | None) -> Result:
        before = len(self.ops)
        result = super()._run(script, timeout)
        for content in written(self.ops[before:], "authorized_keys"):
            self.text = content
        return result


class Pi(FakeHost):
    """A Pi whose tunnel keys (current, next, old) change as the rotation's scripts say: a new key is the
    next of `spare`, a restart of the tunnel makes every VPS's sessions log in with the key in use."""

    def __init__(self, name: str, path: str, current: str | None, spare: list[str], vpses: list[Vps], *,
                 next_: str | None = None, old: str | None = None, fail_on: str | None = None) -> None:
        super().__init__(name)
        self.path, self.spare, self.vpses, self.breaks = path, spare, vpses, fail_on
        self.slots: dict[str, str | None] = {"current": current, "next": next_, "old": old}

    def answer(self, snippet: str) -> str:
        if f"ssh-keygen -y -f {self.path}" in snippet:
            return "\n".join(f"{s} {self.slots[s] or '-'}" for s in pi_keys.SLOTS)
        return ""

    def _run(self, script: str, timeout: float | None) -> Result:
        if "@@FACT" not in script and "echo 'current -'" in script:  # facts.read: the fact alone
            self.scripts.append(script)
            return Result(0, self.answer(script) + "\n", "")
        result = super()._run(script, timeout)
        if self.breaks is not None and self.breaks in script:
            return Result(1, "", "ssh-keygen: it broke\n")
        s = self.slots
        if "ssh-keygen -q -t ed25519" in script:
            s["next"] = self.spare.pop(0)
        elif f"mv -f {self.path}.next {self.path}" in script and s["next"]:
            s["old"], s["current"], s["next"] = s["old"] or s["current"], s["next"], None
        elif "systemctl restart pitunnel@" in script:
            for vps in self.vpses:
                vps.live[self.name] = s["current"]
        elif f"rm -f {self.path}.old {self.path}.old.pub" in script:
            s["old"] = None
        return result


def owners(inv: Inventory, vps: str) -> dict[str, str]:
    """Each listener on `vps`, by the Pi it is for."""
    return {s.spec: pi.name for pi in inv.pis.values() if vps in pi.all_vps for s in listens(pi.path(vps))}


def vps_text(inv: Inventory, vps: str, pis: dict[str, list[str]]) -> str:
    """authorized_keys as pitunnel writes it: each Pi's keys with its restrictions."""
    return "".join(authorized_line(inv.vps[vps], inv.pis[pi].path(vps), k) + "\n" for pi, ks in pis.items() for k in ks)


def setup(tmp_path: Path, keys: dict[str, str], *, current: str | None = "old", next_: str | None = None,
          old: str | None = None, accepted: tuple[str, ...] = ("old",), live: str | None = "old",
          spare: tuple[str, ...] = ("new",), fail_on: str | None = None) -> tuple[Inventory, Pi, Vps]:
    """alpha on main, beta beside it on main (its own key, untouched by alpha's rotation)."""
    inv = load(tmp_path, INVENTORY)
    vps = Vps("main", vps_text(inv, "main", {"alpha": [keys[k] for k in accepted], "beta": [keys["beta"]]}),
              {"alpha": keys[live] if live else None, "beta": keys["beta"]}, owners(inv, "main"))
    pi = Pi("alpha", key_path(inv.pis["alpha"]), keys[current] if current else None, [keys[k] for k in spare],
            [vps], next_=keys[next_] if next_ else None, old=keys[old] if old else None, fail_on=fail_on)
    return inv, pi, vps


def alpha_keys(text: str) -> list[str]:
    """alpha's key blobs in an authorized_keys text, in order."""
    return [" ".join(line.split()[-3:-1]) for line in text.splitlines() if line.endswith("pitunnel:alpha")]


def pi_scripts(pi: Pi) -> list[str]:
    """The scripts the Pi was sent that change something (every fact read left out), by what they do."""
    names = [("ssh-keygen -q -t ed25519", "make"), (f"mv -f {pi.path}.next {pi.path}", "switch"),
             ("systemctl restart pitunnel@", "restart"), (f"rm -f {pi.path}.old {pi.path}.old.pub", "drop old")]
    return [next((n for k, n in names if k in s), s) for s in pi.ops]


# ------------------------------------------------------------------------------------------ rotate-keys
def test_a_rotation_makes_authorises_switches_reconnects_and_retires_in_order(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv, pi, vps = setup(tmp_path, keys)
    play = play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"}))
    rotate.rotate_keys(play)
    assert play.failed == set()
    assert pi_scripts(pi) == ["make", "switch", "restart", "drop old"]
    assert pi.slots == {"current": keys["new"], "next": None, "old": None}
    # the VPS: both keys with alpha's restrictions, then the new one alone; beta's line as it was each time
    beta = authorized_line(inv.vps["main"], inv.pis["beta"].path("main"), keys["beta"])
    both, only = written(vps.ops, "authorized_keys")
    assert alpha_keys(both) == [keys["old"], keys["new"]] and alpha_keys(only) == [keys["new"]]
    for text in (both, only):
        assert beta in text.splitlines()
        assert all('permitlisten="0.0.0.0:20022",permitlisten="127.0.0.1:20080"' in line
                   for line in text.splitlines() if line.endswith("pitunnel:alpha"))
    assert vps.text == only
    old, new = fp(keys["old"]), fp(keys["new"])
    out = lines(capsys)
    in_order(out, [
        f"changed alpha tunnel key: make a new key on the Pi - {new} (its private half never leaves the Pi)",
        f"changed alpha tunnel key: authorise it on the VPS next to the key in use - {new}, with the same "
        f"restrictions, beside {old}",
        f"changed alpha tunnel key: switch the tunnel's key to it (the old one kept) - {new} at "
        f"{key_path(inv.pis['alpha'])}; {old} kept as .old until the VPS drops it",
        f"changed alpha tunnel key: remove the old key from the VPS - {old} no longer accepted",
        f"changed alpha tunnel key: remove the old key from the Pi - {old} deleted",
        f"ok alpha tunnel key rotated - in use: {new}; the VPS accepts it alone; no other key on the Pi",
    ])
    connect = [line for line in out if "reconnect the tunnel with it" in line]
    assert len(connect) == 1 and connect[0].startswith(
        "changed alpha tunnel key: reconnect the tunnel with it, proven by the VPS's log - reconnected: every "
        f"listener (0.0.0.0:20022, 127.0.0.1:20080) held by a session that logged in with {new} (sshd's log), ")
    took = re.fullmatch(r".*\(sshd's log\), (\d+\.\d)s", connect[0])
    assert took is not None and float(took.group(1)) < 5  # the time it took, from the step's start
    assert not any("under way" in line for line in out)  # a fresh start is no resumed one
    assert vps.live["beta"] == keys["beta"]  # beta's sessions never ended


def test_a_rotation_in_check_mode_sends_nothing_and_lists_every_step(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv, pi, vps = setup(tmp_path, keys)
    rotate.rotate_keys(play_on(inv, {"alpha": pi, "main": vps}, check=True, limit=frozenset({"alpha"})))
    assert pi.ops == [] and vps.ops == []
    assert pi.slots["next"] is None and alpha_keys(vps.text) == [keys["old"]]
    out = lines(capsys)
    assert [line for line in out if line.startswith(("would change alpha", "ok alpha"))] == [
        "would change alpha tunnel key: make a new key on the Pi - no rotation under way",
        "would change alpha tunnel key: authorise it on the VPS next to the key in use - the new key is not "
        "accepted by the VPS yet",
        "would change alpha tunnel key: switch the tunnel's key to it (the old one kept) - the VPS accepts both keys",
        "would change alpha tunnel key: reconnect the tunnel with it, proven by the VPS's log - the tunnel's "
        f"session uses {fp(keys['old'])}, not the new key",
        "would change alpha tunnel key: remove the old key from the VPS - the tunnel is up with the new key",
        "would change alpha tunnel key: remove the old key from the Pi - the VPS accepts the new key only",
        "ok alpha tunnel key: done",
    ]


def test_a_rotation_killed_after_the_switch_is_read_back_and_finished_without_a_new_key(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # switched: the Pi uses the new key and keeps the old; the VPS accepts both; the session still the old key's
    inv, pi, vps = setup(tmp_path, keys, current="new", old="old", accepted=("old", "new"), live="old",
                         spare=("newer",))
    play = play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"}))
    rotate.rotate_keys(play)
    assert play.failed == set()
    assert pi_scripts(pi) == ["restart", "drop old"]  # no new key made, no second switch
    assert pi.spare == [keys["newer"]] and pi.slots["current"] == keys["new"]
    assert [alpha_keys(t) for t in written(vps.ops, "authorized_keys")] == [[keys["new"]]]
    out = lines(capsys)
    assert out.index("alpha a rotation of the tunnel key is under way (an earlier run stopped): finishing it") \
        < next(i for i, line in enumerate(out) if "reconnect the tunnel" in line)
    assert f"ok alpha tunnel key rotated - in use: {fp(keys['new'])}; the VPS accepts it alone; no other key on " \
           "the Pi" in out


def test_a_rotation_killed_after_the_key_was_made_authorises_that_key(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv, pi, vps = setup(tmp_path, keys, next_="new", spare=("newer",))
    rotate.rotate_keys(play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"})))
    assert pi_scripts(pi)[0] == "switch" and "make" not in pi_scripts(pi)
    assert alpha_keys(written(vps.ops, "authorized_keys")[0]) == [keys["old"], keys["new"]]
    assert pi.slots == {"current": keys["new"], "next": None, "old": None}


def test_a_finished_rotation_rerun_starts_a_new_one_and_a_tunnel_back_by_itself_is_not_restarted(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # switched and the tunnel came back with the new key on its own: CONNECT needs no restart
    inv, pi, vps = setup(tmp_path, keys, current="new", old="old", accepted=("old", "new"), live="new")
    rotate.rotate_keys(play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"})))
    assert pi_scripts(pi) == ["drop old"]
    out = lines(capsys)
    assert not any("reconnect the tunnel" in line for line in out)  # CONNECT not needed: up with the new key
    assert any(line.startswith("changed alpha tunnel key: remove the old key from the VPS") for line in out)


def test_connect_waits_for_a_tunnel_that_comes_back_by_itself(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # switched, the tunnel down (nobody listens): no restart is sent, the tunnel comes back with the new key
    inv, pi, vps = setup(tmp_path, keys, current="new", old="old", accepted=("old", "new"), live=None)
    calls = []

    def back(snippet: str, answer=vps.answer) -> str:  # type: ignore[no-untyped-def]
        if "ss -Htlnp" in snippet:
            calls.append(snippet)
            if len(calls) > 1:
                vps.live["alpha"] = keys["new"]
        return answer(snippet)

    vps.answer = back  # type: ignore[method-assign]
    play = play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"}))
    rotate.rotate_keys(play)
    assert play.failed == set()
    assert "restart" not in pi_scripts(pi)
    connect = [line for line in lines(capsys) if "reconnect the tunnel with it" in line]
    assert len(connect) == 1 and " - came back by itself: every listener (0.0.0.0:20022, 127.0.0.1:20080)" in connect[0]


def test_a_tunnel_that_does_not_come_back_with_the_new_key_fails_and_keeps_the_old_key_accepted(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PI_DEFAULTS, "listen_wait_seconds", 0.05)
    inv, pi, vps = setup(tmp_path, keys, current="new", old="old", accepted=("old", "new"), live="old")
    pi.vpses = []  # the restart does not reconnect anything: the old key's session holds on
    play = play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"}))
    rotate.rotate_keys(play)
    assert play.failed == {"alpha"}
    assert pi_scripts(pi) == ["restart", "restart"]  # tried twice, then gave up; the old key never dropped
    assert vps.ops == [] and pi.slots["old"] == keys["old"]
    (failed,) = [line for line in lines(capsys) if line.startswith("failed alpha")]
    assert failed.startswith(f"failed alpha tunnel key: reconnect the tunnel with it, proven by the VPS's log - not "
                             f"up with {fp(keys['new'])} after ")
    assert failed.endswith(f"s ({fp(keys['old'])}); the VPS still accepts the old key: rerun, and see "
                           "`journalctl -u pitunnel@main.service`")


@pytest.mark.parametrize(("state", "why"), [
    ({"current": None, "accepted": ()}, "the Pi has no tunnel key: run `invoke provision-pi` first"),
    ({"accepted": ()}, "the VPS does not accept the Pi's key: run `invoke provision-pi` first"),
    ({"live": None}, "the tunnel is not up with its key (nobody listening): a rotation starts only from a working "
                     "tunnel (see `invoke status`)"),
])
def test_a_rotation_is_refused_from_a_pi_not_provisioned_or_not_up_and_nothing_is_sent(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str], state: dict[str, object],
        why: str) -> None:
    inv, pi, vps = setup(tmp_path, keys, **state)  # type: ignore[arg-type]
    play = play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"}))
    rotate.rotate_keys(play)
    assert play.failed == {"alpha"} and pi.ops == [] and vps.ops == []
    assert f"failed alpha tunnel key rotation - {why}" in lines(capsys)


def test_a_new_key_another_pi_holds_is_refused_and_nothing_is_written(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    # the key the Pi made is one the VPS lists for beta: alpha must never hold it
    inv, pi, vps = setup(tmp_path, keys, spare=("beta",))
    before = vps.text
    play = play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"}))
    rotate.rotate_keys(play)
    assert play.failed == {"alpha"}
    assert vps.ops == [] and vps.text == before  # nothing written: beta keeps its line, alpha its old key
    assert pi_scripts(pi) == ["make"] and pi.slots["current"] == keys["old"]
    out = lines(capsys)
    assert any(line.startswith("failed alpha tunnel key on main - ") for line in out), out


def test_a_pi_step_that_fails_reports_its_error_and_stops(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv, pi, vps = setup(tmp_path, keys, fail_on="ssh-keygen -q -t ed25519")
    play = play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"}))
    rotate.rotate_keys(play)
    assert play.failed == {"alpha"} and vps.ops == []
    assert "failed alpha tunnel key: make a new key on the Pi - ssh-keygen: it broke" in lines(capsys)


def test_a_pi_with_two_vpses_switches_once_both_accept_and_retires_once_both_hold_the_new_key(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    main = Vps("main", vps_text(inv, "main", {"duo": [keys["old"]]}), {"duo": keys["old"]}, owners(inv, "main"))
    spare = Vps("spare", vps_text(inv, "spare", {"duo": [keys["old"]]}), {"duo": keys["old"]}, owners(inv, "spare"))
    pi = Pi("duo", key_path(inv.pis["duo"]), keys["old"], [keys["new"]], [main, spare])
    journal: list[str] = []
    for host in (pi, main, spare):
        host.journal = journal
    play = play_on(inv, {"duo": pi, "main": main, "spare": spare}, limit=frozenset({"duo"}))
    rotate.rotate_keys(play)
    assert play.failed == set()
    assert pi_scripts(pi)[:2] == ["make", "switch"] and pi_scripts(pi)[-1] == "drop old"
    # both VPSes accepted both keys before the switch, and only the new one at the end
    for vps in (main, spare):
        assert [keys_of(t, "duo") for t in written(vps.ops, "authorized_keys")] == [
            [keys["old"], keys["new"]], [keys["new"]]]
    applies = [j for j in journal if j.endswith("apply") or j == "duo run"]
    assert applies.index("duo run", 1) > max(applies.index("main apply"), applies.index("spare apply"))
    restart = next(s for s in pi.ops if "systemctl restart" in s)
    assert restart == "systemctl restart pitunnel@main.service\nsystemctl restart pitunnel@spare.service\n"
    out = lines(capsys)
    new = fp(keys["new"])
    assert any(line.startswith(f"changed duo tunnel key: authorise it on the VPS next to the key in use - {new} on "
                               "main, spare, with the same restrictions") for line in out), out
    (connect,) = [line for line in out if "reconnect the tunnel" in line]
    assert "reconnected: every listener (main: 127.0.0.1:20024; spare: 127.0.0.1:20024) held by a session that logged in " \
           f"with {new} (sshd's log)" in connect
    assert [line for line in out if "remove the old key from the VPS" in line] == [
        f"changed duo tunnel key: remove the old key from the VPS - {fp(keys['old'])} no longer accepted"]


def keys_of(text: str, pi: str) -> list[str]:
    return [" ".join(line.split()[-3:-1]) for line in text.splitlines() if line.endswith(f"pitunnel:{pi}")]


# ------------------------------------------------------------------------------------------ --laptop-key
class LaptopPi(FakeHost):
    """A Pi whose login user's authorized_keys is what the last write left; a fresh login with the new key
    alone answers `proof` (None: it let us in). `events`: each write and each proof, in order."""

    def __init__(self, inv: Inventory, text: str | bytes | None, *, proof: str | None = None, gateway: str | None = None) -> None:
        super().__init__("alpha")
        pi = inv.pis["alpha"]
        self.path, self.owner, self.text, self.proof = pi_keys.laptop_keys_path(pi), pi.user, text, proof
        self.through_tunnel, self.gateway_name = gateway is not None, gateway or ""
        self.events: list[str] = []

    def answer(self, snippet: str) -> str:
        return file_state(self.text, f"{self.owner}:{self.owner}:600") if f"base64 -w0 {self.path}" in snippet else ""

    def proves_key(self, key: Path, *, within: float = 5) -> str | None:
        self.events.append(f"login {key.name}")
        return self.proof

    def _run(self, script: str, timeout: float | None) -> Result:
        if "@@FACT" not in script and f"base64 -w0 {self.path}" in script:  # facts.read: the fact alone
            self.scripts.append(script)
            return Result(0, self.answer(script) + "\n", "")
        before = len(self.ops)
        result = super()._run(script, timeout)
        for content in written(self.ops[before:], "authorized_keys"):
            self.text = content
            self.events.append("write " + ",".join(pi_keys.laptop_keys(content)))
        return result


def laptop(tmp_path: Path, keys: dict[str, str]) -> Path:
    """The new laptop key's files, as --laptop-key names them."""
    new = tmp_path / "laptop2"
    new.write_text("private\n")
    new.with_name("laptop2.pub").write_text(keys["laptop2"] + " me@laptop\n")
    return new


MINE = "ssh-rsa AAAAB3mine me@home"


def test_the_laptop_key_is_added_proven_by_a_login_alone_then_the_old_one_removed(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    pi = LaptopPi(inv, f"{MINE}\n{keys['laptop']} pitunnel-laptop\n")
    new = laptop(tmp_path, keys)
    play = play_on(inv, {"alpha": pi}, limit=frozenset({"alpha"}))
    rotate_laptop_key(play, new)
    assert play.failed == set()
    old_key, new_key = keys["laptop"], keys["laptop2"]
    assert pi.events == [f"write {old_key},{new_key}", "login laptop2", f"write {new_key}"]
    both, only = written(pi.ops, "authorized_keys")
    assert both.splitlines() == [MINE, f"{old_key} pitunnel-laptop", f"{new_key} pitunnel-laptop"]
    assert only.splitlines() == [MINE, f"{new_key} pitunnel-laptop"]  # the user's own line kept, in its place
    out = lines(capsys)
    in_order(out, [
        f"ok alpha laptop key: a fresh login with the new key alone - {new} (direct; no agent, no other key, "
        "no password)",
        f"ok alpha laptop key rotated - pi@alpha accepts {new} alone (of pitunnel's laptop keys): set laptop_key "
        "(and key) to it in the inventory",
    ])
    assert sum(line.startswith("changed alpha laptop's keys for passwordless login") for line in out) == 2


def test_a_laptop_key_rotation_killed_after_the_add_swaps_on_the_rerun(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    pi = LaptopPi(inv, f"{keys['laptop']} pitunnel-laptop\n{keys['laptop2']} pitunnel-laptop\n", gateway="main")
    new = laptop(tmp_path, keys)
    rotate_laptop_key(play_on(inv, {"alpha": pi}, limit=frozenset({"alpha"})), new)
    assert pi.events == ["login laptop2", f"write {keys['laptop2']}"]
    assert f"ok alpha laptop key: a fresh login with the new key alone - {new} (through main's tunnel; no agent, " \
           "no other key, no password)" in lines(capsys)


def test_a_laptop_key_refused_at_the_login_keeps_the_old_key(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    pi = LaptopPi(inv, f"{keys['laptop']} pitunnel-laptop\n", proof="Authentication failed.")
    new = laptop(tmp_path, keys)
    play = play_on(inv, {"alpha": pi}, limit=frozenset({"alpha"}))
    rotate_laptop_key(play, new)
    assert play.failed == {"alpha"}
    assert pi.events == [f"write {keys['laptop']},{keys['laptop2']}", "login laptop2"]  # never the removal
    assert pi_keys.laptop_keys(written(pi.ops, "authorized_keys")[-1]) == [keys["laptop"], keys["laptop2"]]
    assert "failed alpha laptop key: a fresh login with the new key alone - the old key stays authorised: " \
           "Authentication failed." in lines(capsys)


def test_a_laptop_key_rotation_in_check_mode_sends_nothing_and_says_what_follows(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    pi = LaptopPi(inv, f"{keys['laptop']} pitunnel-laptop\n")
    rotate_laptop_key(play_on(inv, {"alpha": pi}, check=True, limit=frozenset({"alpha"})), laptop(tmp_path, keys))
    assert pi.ops == [] and pi.events == []
    out = lines(capsys)
    assert any(line.startswith("would change alpha laptop's keys for passwordless login") for line in out), out
    assert "alpha then: a fresh login with the new key, then the old key(s) removed" in out
    assert not any("rotated" in line for line in out)


def test_a_pi_that_accepts_the_new_laptop_key_alone_is_left_as_it_is(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    new = laptop(tmp_path, keys)
    done = f"{MINE}\n{keys['laptop2']} pitunnel-laptop\n"
    for check in (False, True):
        pi = LaptopPi(inv, done)
        play = play_on(inv, {"alpha": pi}, check=check, limit=frozenset({"alpha"}))
        rotate_laptop_key(play, new)
        assert pi.ops == [] and pi.events == [] and play.failed == set()
        out = lines(capsys)
        assert [line for line in out if "alpha" in line] == [
            f"ok alpha laptop key rotated - pi@alpha accepts {new} alone (of pitunnel's laptop keys): set laptop_key "
            "(and key) to it in the inventory"]


# ------------------------------------------------------------------------------------------ roles/pi/keys.py
PI_KEY = "/var/lib/pitunnel/.ssh/pitunnel_ed25519"


def test_the_pis_three_keys_are_read_in_one_script_from_their_private_halves(tmp_path: Path,
                                                                             keys: dict[str, str]) -> None:
    inv = load(tmp_path, INVENTORY)
    # as the Pi prints it: ssh-keygen -y adds the comment; a .next half-written by a kill is no key
    out = f"current {keys['old']} pitunnel:alpha\nnext ssh-ed25519 AAAAC3Nza\nold -\n\nstray words here\n"
    host = FakeHost("alpha", commands=[("ssh-keygen -y -f", out)])
    found = pi_keys.read_keys(host, inv.pis["alpha"])  # type: ignore[arg-type]
    assert found == pi_keys.PiKeys(parse_public_key(keys["old"]), None, None)
    (script,) = host.scripts
    for slot, path in (("current", PI_KEY), ("next", f"{PI_KEY}.next"), ("old", f"{PI_KEY}.old")):
        assert (f"if [ -f {path} ] && p=$(ssh-keygen -y -f {path} 2>/dev/null); then echo \"{slot} $p\"; "
                f"else echo '{slot} -'; fi\n") in script
    assert pi_keys.keys_fact(inv.pis["alpha"]).key == "tunnel-keys:alpha"
    both = pi_keys._derived(f"old {keys['old']}\nnext {keys['new']} pitunnel:alpha\ncurrent  -  \n")
    assert both == pi_keys.PiKeys(None, parse_public_key(keys["new"]), parse_public_key(keys["old"]))
    assert pi_keys._derived("") == pi_keys.PiKeys(None, None, None)


def test_the_pis_key_scripts_as_sent(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    alpha = inv.pis["alpha"]
    assert pi_keys.make_next(alpha) == (
        f"rm -f {PI_KEY}.next {PI_KEY}.next.pub\n"
        f"runuser -u pitunnel -- ssh-keygen -q -t ed25519 -N '' -C pitunnel:alpha -f {PI_KEY}.next\n")
    assert pi_keys.drop_old(alpha) == f"rm -f {PI_KEY}.old {PI_KEY}.old.pub\n"
    assert pi_keys.reconnect(alpha) == "systemctl restart pitunnel@main.service\n"
    assert pi_keys.reconnect(inv.pis["duo"]) == ("systemctl restart pitunnel@main.service\n"
                                                 "systemctl restart pitunnel@spare.service\n")


def run_switch(tmp_path: Path, script: str) -> dict[str, str]:
    """switch(pi)'s script, run by sh on a copy of the key directory (runuser: the command as it is)."""
    key = tmp_path / "pitunnel_ed25519"
    body = script.replace(PI_KEY, str(key))
    subprocess.run(["sh", "-c", "runuser() { shift 3; \"$@\"; }\n" + body], check=True, timeout=20)
    return {p.name[len(key.name):] or "key": p.read_text().split()[1] if p.name.endswith(".pub") else
            p.read_text() for p in sorted(tmp_path.iterdir())}


def test_the_switch_keeps_the_old_key_and_a_rerun_after_a_kill_repeats_only_what_is_left(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    script = pi_keys.switch(inv.pis["alpha"])
    keydir = tmp_path / "keys"
    old, new = keygen(keydir / "pitunnel_ed25519", "old").split()[1], keygen(keydir / "pitunnel_ed25519.next").split()[1]
    old_private = (keydir / "pitunnel_ed25519").read_text()
    new_private = (keydir / "pitunnel_ed25519.next").read_text()
    after_one = run_switch(keydir, script)
    assert after_one == {"key": new_private, ".pub": new, ".old": old_private}
    assert run_switch(keydir, script) == after_one  # a rerun finds no .next: nothing moves
    # killed after the hard link: the rerun keeps that .old (the key in use), and moves .next in
    (keydir / "pitunnel_ed25519").rename(keydir / "pitunnel_ed25519.next")
    (keydir / "pitunnel_ed25519").write_text(old_private)
    (keydir / "pitunnel_ed25519.pub").write_text(f"ssh-ed25519 {old}\n")
    assert run_switch(keydir, script) == {"key": new_private, ".pub": new, ".old": old_private}
    assert script.startswith("set -e\n")  # a failed move stops the rest


# ------------------------------------------------------------------------------------------ the laptop's key
def test_only_the_laptop_keys_pitunnel_put_there_are_read(keys: dict[str, str]) -> None:
    text = (f"{MINE}\n\n{keys['laptop']} pitunnel-laptop\n"
            f"ssh-ed25519 pitunnel-laptop\n{keys['laptop2']}   pitunnel-laptop  \n{keys['new']} pitunnel-laptop-not\n")
    assert pi_keys.laptop_keys(text) == [keys["laptop"], keys["laptop2"]]


def test_the_laptop_keys_file_belongs_to_the_login_user(tmp_path: Path, keys: dict[str, str]) -> None:
    from pitunnel.facts import FileState

    inv = load(tmp_path, INVENTORY.replace("    address: 10.0.0.2\n", "    address: 10.0.0.2\n    user: root\n", 1))
    op = pi_keys.laptop_keys_op(inv.pis["alpha"], [keys["laptop"], keys["laptop2"]])
    assert (op.path, op.owner, op.group, op.mode) == ("/root/.ssh/authorized_keys", "root", "root", 0o600)
    assert op.wanted(FileState(False)) == f"{keys['laptop']} pitunnel-laptop\n{keys['laptop2']} pitunnel-laptop\n"
    kept = op.wanted(FileState(True, content=f"{MINE}\nssh-ed25519 AAAAold pitunnel-laptop\n# note\n".encode()))
    assert kept == f"{MINE}\n# note\n{keys['laptop']} pitunnel-laptop\n{keys['laptop2']} pitunnel-laptop\n"
    assert pi_keys.laptop_keys_path(inv.pis["beta"]) == "/home/pi/.ssh/authorized_keys"
    pi = pi_keys.laptop_keys_op(inv.pis["beta"], [keys["laptop"]])
    assert (pi.path, pi.owner, pi.group, pi.mode) == ("/home/pi/.ssh/authorized_keys", "pi", "pi", 0o600)
    # a byte that is no UTF-8 in the user's own line: the file is still read and rewritten
    odd = pi.wanted(FileState(True, content=b"ssh-rsa AAAAB3mine caf\xe9@home\n"))
    assert odd.splitlines()[1] == f"{keys['laptop']} pitunnel-laptop" and odd.startswith("ssh-rsa AAAAB3mine caf")


def test_the_laptop_keys_next_step_and_why() -> None:
    from pitunnel.roles.laptopkey import Step, after, next_step

    assert next_step(("old",), "new") == (Step.ADD, "the Pi does not accept the new key yet")
    assert next_step(("new", "old"), "new") == (Step.SWAP, "the Pi accepts the old key(s) too")
    assert next_step(("new",), "new") == (Step.DONE, "")
    assert after(("old",), Step.ADD, "new") == ("old", "new") and after(("old", "new"), Step.SWAP, "new") == ("new",)
    assert after(("old",), Step.DONE, "new") == ("old",) and after(("old",), Step.REFUSED, "new") == ("old",)


def test_a_laptop_key_rotation_reads_a_file_with_a_byte_that_is_no_utf8(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv = load(tmp_path, INVENTORY)
    pi = LaptopPi(inv, b"ssh-rsa AAAAB3mine caf\xe9@home\n" + f"{keys['laptop']} pitunnel-laptop\n".encode())
    play = play_on(inv, {"alpha": pi}, limit=frozenset({"alpha"}))
    rotate_laptop_key(play, laptop(tmp_path, keys))
    assert play.failed == set()
    assert pi.events == [f"write {keys['laptop']},{keys['laptop2']}", "login laptop2", f"write {keys['laptop2']}"]


# ------------------------------------------------------------------------------------------ roles/vps/keys.py
def test_the_vps_reads_a_pis_keys_and_who_holds_its_listeners_in_one_round_trip(tmp_path: Path,
                                                                                keys: dict[str, str]) -> None:
    inv = load(tmp_path, INVENTORY)
    text = vps_text(inv, "main", {"alpha": [keys["old"], keys["new"]], "beta": [keys["beta"]]})
    asked = listens(inv.pis["alpha"].path("main"))
    live = f"0.0.0.0:20022 {fp(keys['new'])}\n127.0.0.1:20080\n127.0.0.1:20023 {fp(keys['beta'])}\n"
    host = FakeHost("main", [("ss -Htlnp", live), (keys_path(), file_state(text))])
    found = vps_keys.read_keys(host, inv.vps["main"], "alpha", asked)  # type: ignore[arg-type]
    assert found == vps_keys.VpsKeys((keys["old"], keys["new"]), {Listener(True, 20022): fp(keys["new"]),
                                                                  Listener(False, 20080): ""})
    assert host.round_trips == 1 and host.ops == []
    empty = vps_keys.read_keys(FakeHost("main", [(keys_path(), "ABSENT")]), inv.vps["main"], "alpha",  # type: ignore[arg-type]
                               asked)
    assert empty == vps_keys.VpsKeys((), {})


def test_the_live_key_script_asks_each_listener_and_reads_sshds_log_for_the_tunnel_account(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY.replace("main: {address: 203.0.113.1}",
                                           "main: {address: 203.0.113.1, tunnel_user: tunnels}"))
    fact = vps_keys.live_fact(inv.vps["main"], listens(inv.pis["alpha"].path("main")))
    assert fact.key == "live-keys:0.0.0.0:20022,127.0.0.1:20080"
    assert fact.script.startswith("set -- 0.0.0.0:20022 20022 127.0.0.1:20080 20080\n")
    assert "ss -Htlnp \"sport = :$port\" | awk -v s=\"$spec\" '$4 == s'" in fact.script
    assert "journalctl -q -b -o cat _UID=0 _PID=$mon _COMM=sshd _COMM=sshd-session" in fact.script
    assert "s/^Accepted publickey for tunnels from .* ssh2: [A-Z0-9-]* \\(SHA256:[A-Za-z0-9+\\/]*\\)$/\\1/p" \
        in fact.script
    assert 'fp="$fp ${got:-?}"' in fact.script and 'echo "$spec$fp"' in fact.script


def test_the_sed_of_the_live_key_script_takes_the_fingerprint_of_sshds_line(tmp_path: Path) -> None:
    inv = load(tmp_path, INVENTORY)
    script = vps_keys.live_fact(inv.vps["main"], listens(inv.pis["alpha"].path("main"))).script
    sed = re.search(r"sed -n '([^']*)'", script)
    assert sed is not None
    log = ("Accepted publickey for pitunnel from 198.51.100.7 port 40000 ssh2: ED25519 SHA256:ab+c/9\n"
           "Accepted publickey for other from 198.51.100.7 port 40000 ssh2: ED25519 SHA256:zzz\n"
           "Accepted publickey for pitunnel from 198.51.100.7 port 40001 ssh2: RSA-SHA2-256 SHA256:Def0\n")
    run = subprocess.run(["sed", "-n", sed.group(1)], input=log, capture_output=True, text=True, check=True)
    assert run.stdout.splitlines() == ["SHA256:ab+c/9", "SHA256:Def0"]


def test_the_live_keys_output_odd_lines() -> None:
    asked = [Listener(True, 20022), Listener(False, 20080), Listener(False, 20081)]
    out = "\n0.0.0.0:20022 SHA256:abc\nnoise 0.0.0.0:20022\n127.0.0.1:20080 ?\n127.0.0.1:9999 SHA256:x\n"
    assert vps_keys._live(out, asked) == {Listener(True, 20022): "SHA256:abc", Listener(False, 20080): "?"}


def test_the_vpss_host_keys_now_and_staged() -> None:
    out = ("cur ssh-ed25519 AAAAone root@vps\ncur ssh-rsa AAAAtwo\ncur\nnew ssh-ed25519 AAAAlost\n"
           "STAGED\nnew ssh-ed25519 AAAAthree root@vps\nbogus ssh-ed25519 AAAAx\n\n")
    assert vps_keys._host_keys(out) == vps_keys.HostKeys(
        ("ssh-ed25519 AAAAone", "ssh-rsa AAAAtwo"), ("ssh-ed25519 AAAAlost", "ssh-ed25519 AAAAthree"))
    assert vps_keys._host_keys("cur ssh-ed25519 AAAAone\nSTAGED\n") == vps_keys.HostKeys(("ssh-ed25519 AAAAone",), ())
    assert vps_keys._host_keys("cur ssh-ed25519 AAAAone\n").staged is None
    host = FakeHost("main", commands=[("ssh_host_", "cur ssh-ed25519 AAAAone\n")])
    assert vps_keys.read_host_keys(host) == vps_keys.HostKeys(("ssh-ed25519 AAAAone",), None)  # type: ignore[arg-type]
    assert f"if [ -d {vps_keys.STAGED} ]; then echo STAGED; for f in {vps_keys.STAGED}/ssh_host_*_key.pub;" \
        in host.scripts[0]


def run_on_copy(root: Path, script: str) -> str:
    """A host-key script of vps/keys.py run by sh on a copy of /etc/ssh and pitunnel's state directory under
    `root` (sshd -t passes; systemctl only says what it was asked); what systemctl was asked."""
    body = script.replace(vps_keys.STATE_DIR, f"{root}/state").replace("/etc/ssh", f"{root}/etc")
    stubs = f'sshd() {{ :; }}\nsystemctl() {{ echo "$@" >> {root}/asked; }}\nhostname() {{ echo vps; }}\n'
    subprocess.run(["sh", "-c", stubs + body], check=True, timeout=60)
    return (root / "asked").read_text() if (root / "asked").exists() else ""


def test_host_keys_are_staged_of_every_type_installed_with_the_old_kept_restored_and_dropped(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    keygen(etc / "ssh_host_ed25519_key", "root@vps")
    old_private = (etc / "ssh_host_ed25519_key").read_text()
    (tmp_path / "state" / "host-keys-next.tmp").mkdir(parents=True)
    (tmp_path / "state" / "host-keys-next.tmp" / "half-made").write_text("x")
    assert run_on_copy(tmp_path, vps_keys.stage_host_keys()) == ""
    staged = tmp_path / "state" / "host-keys-next"
    assert sorted(p.name for p in staged.iterdir()) == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
    assert not (tmp_path / "state" / "host-keys-next.tmp").exists()  # the half-made set of a killed run gone
    assert staged.stat().st_mode & 0o777 == 0o700  # root only
    assert (staged / "ssh_host_ed25519_key.pub").read_text().split()[2] == "root@vps"
    new_private = (staged / "ssh_host_ed25519_key").read_text()
    assert new_private != old_private

    assert run_on_copy(tmp_path, vps_keys.install_host_keys("ssh")) == "reload ssh\n"
    assert (etc / "ssh_host_ed25519_key").read_text() == new_private
    assert (etc / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
    assert (etc / "ssh_host_ed25519_key.pub").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "state" / "host-keys-old" / "ssh_host_ed25519_key").read_text() == old_private
    # installed again (a rerun): the old key kept aside is still the one from before the first install
    run_on_copy(tmp_path, vps_keys.install_host_keys("ssh"))
    assert (tmp_path / "state" / "host-keys-old" / "ssh_host_ed25519_key").read_text() == old_private

    assert run_on_copy(tmp_path, vps_keys.restore_host_keys("sshd")) == "reload ssh\nreload ssh\nreload sshd\n"
    assert (etc / "ssh_host_ed25519_key").read_text() == old_private

    run_on_copy(tmp_path, vps_keys.drop_staged())
    assert not (tmp_path / "state").exists()  # the staged copies, the old private keys and the directory gone


def test_a_vps_file_listing_a_key_for_two_other_pis_stops_the_rotation_before_any_write(
        tmp_path: Path, keys: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    inv, pi, vps = setup(tmp_path, keys)
    vps.text += vps_text(inv, "main", {"duo": [keys["beta"]]})  # beta's key listed for duo too (not alpha's doing)
    before = vps.text
    play = play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"}))
    rotate.rotate_keys(play)
    assert play.failed == {"alpha"} and vps.ops == [] and vps.text == before
    out = lines(capsys)
    assert "failed alpha tunnel key: authorise it on the VPS next to the key in use - nothing written on main: it " \
           "lists a key for two Pis (see above)" in out
    assert any(line.startswith("failed beta tunnel key on main - ") for line in out), out


def test_each_authorised_write_reads_the_vps_once_then_writes(tmp_path: Path, keys: dict[str, str]) -> None:
    inv, pi, vps = setup(tmp_path, keys)
    rotate.rotate_keys(play_on(inv, {"alpha": pi, "main": vps}, limit=frozenset({"alpha"})))
    # the flow reads its state 8 times (at the start, after each of its 6 steps, once while reconnecting), and
    # each of the two writes reads the file once and applies once: no second read before a write
    kinds = ["apply" if "@@OP" in s else "read" for s in vps.scripts]
    assert kinds.count("apply") == 2
    first = kinds.index("apply")
    assert kinds[first - 1] == "read" and "ss -Htlnp" not in vps.scripts[first - 1]  # the write's own read
    assert len(vps.scripts) == 8 + 2 * 2


# ----------------------------------------------------------------------- the way check mode foresees


def test_each_step_leads_to_the_state_check_mode_foresees_with_one_vps_or_several() -> None:
    Ring, Step, NEW = rotate.Ring, rotate.Step, rotate.NEW
    one = Ring(current="A", next=None, old="O", authorised=("O",), live=("A", "?"))
    assert rotate.after(one, Step.AUTHORISE).authorised == ("O", "A")  # the key in use, when no new one is made
    assert rotate.after(one, Step.AUTHORISE).everywhere is None
    several = Ring(current="A", next="B", old=None, authorised=("A", "B"), live=("A",), everywhere=("A",))
    assert rotate.after(several, Step.AUTHORISE).everywhere == ("A", "B")  # now on every VPS
    assert rotate.after(several, Step.RETIRE_VPS) == Ring("A", "B", None, ("A",), ("A",), ("A",))
    assert rotate.after(one, Step.RETIRE_VPS).everywhere is None
    nothing = Ring(current=None, next=None, old=None, authorised=(), live=("A", "?"))
    assert rotate.after(nothing, Step.CONNECT).live == ("", "")  # nobody holds the listeners
    assert rotate.after(nothing, Step.AUTHORISE).authorised == (NEW,)
    assert rotate.after(nothing, Step.RETIRE_VPS).authorised == (NEW,)
    # the whole way from a working tunnel, through two VPSes of which one lacked the key in use at first
    start = Ring(current="A", next=None, old=None, authorised=("A",), live=("A", "A"), everywhere=("A",))
    assert [s for s, _ in rotate.plan(start)] == [Step.MAKE, Step.AUTHORISE, Step.SWITCH, Step.CONNECT,
                                                  Step.RETIRE_VPS, Step.RETIRE_PI, Step.DONE]
    assert [s for s, _ in rotate.plan(start, started=True)] == [Step.DONE]  # a finished run starts no other
    assert len(rotate.plan(start, limit=2)) == 2


def test_why_each_step_is_next_names_the_keys_and_listeners() -> None:
    Ring, Step = rotate.Ring, rotate.Step
    lost = Ring(current="A", next=None, old="O", authorised=("O",), live=("O",))
    assert rotate.next_step(lost, started=True) == (Step.AUTHORISE, "the key in use is not accepted by the VPS")
    mixed = Ring(current="A", next=None, old="O", authorised=("A", "O"), live=("O", "", "B"))
    assert rotate.next_step(mixed, started=True) == (
        Step.CONNECT, "the tunnel's session uses B, O, nobody listening, not the new key")
    none = Ring(current="A", next=None, old=None, authorised=("A",), live=())
    assert rotate.next_step(none, started=False) == (
        Step.REFUSED, "the tunnel is not up with its key (no listeners): a rotation starts only from a working tunnel "
                      "(see `invoke status`)")
