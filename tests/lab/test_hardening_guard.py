"""Issue 11, rows 2 and 8, against the lab's VPS.

Row 2: the laptop's connection dies after an sshd drop-in is written and before the reload and the
fresh-login check. The host must not keep the unproven change: its own timer rolls it back, or the next
run proves it or rolls it back (and never calls it "already as wanted").
Row 8: the tunnel account plants symbolic links in its ~/.ssh; provisioning must never write, chown or
chmod through them (/etc/shadow and /root/.ssh stay exactly as they were)."""

from __future__ import annotations

import shlex
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pitunnel import guard, runner
from pitunnel.inventory import load_inventory
from pitunnel.ops import File
from pitunnel.remote import Remote, Unreachable
from pitunnel.report import Reporter
from pitunnel.runner import Mode, StepFailed, converge
from pitunnel.roles.vps.role import VPS_DEFAULTS
from pitunnel.roles.vps.steps import handlers as vps_handlers
from pitunnel.roles.site import provision_vps
from tests.conftest import lab_up
from tests.lab.runs import RELOAD_SSHD, in_host, play

pytestmark = pytest.mark.lab
DROPIN = "/etc/ssh/sshd_config.d/20-test.conf"
RECORD = "/var/backups/pitunnel/pending/reload-sshd"
TIMER = "pitunnel-confirm-reload-sshd.timer"
EFFECTIVE = "sshd -T -C user=root,host=x,addr=192.0.2.9 | sort"
# what a dead connection raises from Remote.run: Unreachable, or paramiko's EOFError when the write to the
# dead socket is what notices (Remote.run does not turn that one into Unreachable)
CUT = (Unreachable, EOFError)


@pytest.fixture(scope="module")
def inventory() -> Path:
    return lab_up(1).inventory


def new_remote(inventory: Path) -> Remote:
    inv = load_inventory(inventory, save_allocations=False)
    return Remote(inv.vps["vps"], inv.settings.known_hosts)


@pytest.fixture
def cut(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[str]]:
    """cut(marker): right after the apply script whose commands mention `marker` returns (files written,
    no handler run yet), shut the laptop side's socket down and keep that host unreachable for the run."""
    dead: list[str] = []

    def arm(marker: str) -> list[str]:
        real_apply = runner._apply
        real_open = Remote._open

        def apply_then_cut(remote: Remote, *args: Any) -> Any:
            result = real_apply(remote, *args)
            if marker in repr(args):
                transport = remote.connection().client.get_transport()
                assert transport is not None
                transport.sock.shutdown(socket.SHUT_RDWR)  # type: ignore[union-attr]
                dead.append(remote.name)
            return result

        def no_way_back(self: Remote, **kwargs: Any) -> Any:
            if self.name in dead:
                raise Unreachable(f"{self.name}: the laptop's network is down (cut by the test)")
            return real_open(self, **kwargs)

        monkeypatch.setattr(runner, "_apply", apply_then_cut)
        monkeypatch.setattr(Remote, "_open", no_way_back)
        return dead

    return arm


def host_guard_state() -> tuple[bool, str]:
    """(record present, timer state) on the VPS, read through the lab's own door."""
    out = in_host("vps", f"[ -e {RECORD} ] && echo RECORD; systemctl is-active {TIMER} || true").split()
    return "RECORD" in out, out[-1] if out else ""


def wait_until(condition: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(1)
    return condition()


# ---------------------------------------------------------------------------
# row 2


def test_cut_during_provision_vps_then_rerun_proves_the_sshd_change(inventory: Path, cut: Callable[[str], list[str]],
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The first provision of the VPS dies after writing the Match block; the rerun proves it."""
    assert "No such file" in in_host("vps", f"ls {VPS_DEFAULTS['sshd_dropin']} 2>&1")  # a fresh VPS
    dead = cut(VPS_DEFAULTS["sshd_dropin"])
    code, p = play(inventory, provision_vps)
    # the run fails: unreachable, or "internal error: EOFError" when a write notices first (see CUT)
    assert dead == ["vps"] and code in (2, 4) and p is not None and p.reporter.recaps["vps"].bad
    assert "PermitListen" in in_host("vps", f"cat {VPS_DEFAULTS['sshd_dropin']}")  # written, never reloaded nor proven
    assert host_guard_state() == (True, "active"), "the change must be recorded and the host's timer armed"
    monkeypatch.undo()
    capsys.readouterr()

    code, p = play(inventory, provision_vps)
    out = capsys.readouterr().out
    assert code == 0, out
    assert (f"handler reload sshd - proved an earlier run's unproven change to {VPS_DEFAULTS['sshd_dropin']} "
            "(a fresh login works)") in out
    assert "sshd Match block for the tunnel account - written by an earlier run, proven now" in out
    assert "sshd Match block for the tunnel account - already as wanted" not in out
    assert host_guard_state() == (False, "inactive")
    assert "No such file" in in_host("vps", "ls /var/backups/pitunnel/etc%ssh%sshd_config.d%10-pitunnel.conf 2>&1")
    assert new_remote(inventory).can_log_in_fresh(within=5)

    code, p = play(inventory, provision_vps)  # then nothing is left to do: the records are read with the facts
    assert code == 0 and p is not None
    assert p.reporter.recaps["vps"].changed == 0 and p.reporter.recaps["vps"].round_trips == 1


def test_cut_before_the_proof_no_rerun_the_host_rolls_back_on_its_own(inventory: Path, cut: Callable[[str], list[str]],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A change that would lock root out is written, then the laptop vanishes for good: within the window
    the host restores its old sshd config by itself, so even a later sshd restart lets the operator in."""
    window = 8
    monkeypatch.setattr(guard, "CONFIRM_SECONDS", window, raising=False)
    before = in_host("vps", EFFECTIVE)
    vps = new_remote(inventory)
    lockout = File(DROPIN, "DenyUsers root\n", validate="sshd -t", notify=("reload sshd",))
    try:
        cut(DROPIN)
        with pytest.raises(CUT):
            converge(vps, [lockout], Reporter(colour=False), Mode(), vps_handlers(vps))
        assert "DenyUsers root" in in_host("vps", f"cat {DROPIN}")  # the unproven change is on the host
        gone = wait_until(lambda: "No such file" in in_host("vps", f"ls {DROPIN} 2>&1"), within=window + 30)
        assert gone, f"{DROPIN} still there {window + 30} s after the cut: the host kept an unproven sshd change"
        assert wait_until(lambda: host_guard_state() == (False, "inactive"), within=10)
        assert in_host("vps", EFFECTIVE) == before
        in_host("vps", "systemctl restart ssh")  # where an unchecked file would have taken effect
        monkeypatch.undo()
        assert new_remote(inventory).can_log_in_fresh(within=10), "the operator must still get in"
    finally:
        vps.close()
        in_host("vps", f"rm -f {DROPIN} {RECORD}; systemctl stop {TIMER} 2>/dev/null; {RELOAD_SSHD}")


def test_cut_before_the_proof_then_rerun_rolls_back_a_lockout(inventory: Path, cut: Callable[[str], list[str]],
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Same cut, rerun at once (the host's window, 120 s, has not passed): the rerun tries the recorded change
    with a fresh login, which fails, and rolls it back, although the run that wrote it died."""
    before = in_host("vps", EFFECTIVE)
    first = new_remote(inventory)
    lockout = File(DROPIN, "DenyUsers root\n", validate="sshd -t", notify=("reload sshd",))
    try:
        cut(DROPIN)
        with pytest.raises(CUT):
            converge(first, [lockout], Reporter(colour=False), Mode(), vps_handlers(first))
        monkeypatch.undo()
        capsys.readouterr()
        rerun = new_remote(inventory)
        with pytest.raises(StepFailed, match="earlier run's unproven change.*lock you out.*rolled back"):
            converge(rerun, [lockout], Reporter(colour=False), Mode(), vps_handlers(rerun))
        out = capsys.readouterr().out
        assert "already as wanted" not in out
        assert f"failed       vps        handler reload sshd - an earlier run's unproven change to {DROPIN}" in out
        assert "No such file" in in_host("vps", f"ls {DROPIN} 2>&1")
        assert host_guard_state() == (False, "inactive")
        assert in_host("vps", EFFECTIVE) == before
        assert new_remote(inventory).can_log_in_fresh(within=5)
        rerun.close()
    finally:
        first.close()
        in_host("vps", f"rm -f {DROPIN} {RECORD}; systemctl stop {TIMER} 2>/dev/null; {RELOAD_SSHD}")


# ---------------------------------------------------------------------------
# row 8

WATCHED = ("/etc/shadow", "/root/.ssh", "/root/.ssh/authorized_keys")
STATE = "for f in " + " ".join(WATCHED) + "; do echo \"$f $(stat -c %U:%G:%a \"$f\") " \
        "$( [ -f \"$f\" ] && sha256sum < \"$f\" | cut -c1-16)\"; done; ls -a /root/.ssh"
HOME = "/var/lib/pitunnel"
PLANTS = {
    # the name the old code wrote through (`> authorized_keys.pitunnel-tmp`, then chown): a link to /etc/shadow;
    # and a line the owner added, so provisioning has to rewrite the file
    "temp-name": "cd .ssh && echo 'ssh-ed25519 AAAAplanted owner@vps' >> authorized_keys && "
                 "ln -s /etc/shadow authorized_keys.pitunnel-tmp",
    "target": "cd .ssh && rm -f authorized_keys && ln -s /etc/shadow authorized_keys",
    "directory": "mv .ssh .ssh-real && ln -s /root/.ssh .ssh",
}
EXPECTED = {
    "temp-name": None,  # replaced safely: the run succeeds
    "target": f"refusing to write {HOME}/.ssh/authorized_keys: it is a symbolic link (to /etc/shadow)",
    "directory": f"{HOME}/.ssh is a symbolic link in a directory that pitunnel owns",
}


@pytest.fixture
def saved() -> Iterator[None]:
    """Whatever happens, /etc/shadow, /root/.ssh and the tunnel account's ~/.ssh come back as they were."""
    in_host("vps", "rm -rf /root/saved && mkdir /root/saved && cp -a /etc/shadow /root/.ssh /root/saved/ && "
                   f"cp -a {HOME}/.ssh /root/saved/tunnel-ssh")
    yield
    in_host("vps", f"cp -a /root/saved/shadow /etc/shadow && rm -rf /root/.ssh && cp -a /root/saved/.ssh /root/.ssh && "
                   f"rm -rf {HOME}/.ssh {HOME}/.ssh-real && cp -a /root/saved/tunnel-ssh {HOME}/.ssh && rm -rf /root/saved")


@pytest.mark.parametrize("plant", list(PLANTS))
def test_links_planted_by_the_tunnel_account_are_never_followed(inventory: Path, saved: None, plant: str,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert "pitunnel" in in_host("vps", "getent passwd pitunnel")  # provisioned by the tests above
    before = in_host("vps", STATE)
    shadow_line = in_host("vps", "head -1 /etc/shadow").strip()
    in_host("vps", f"cd {HOME} && runuser -u pitunnel -- sh -c {shlex.quote(PLANTS[plant])}")
    capsys.readouterr()
    code, p = play(inventory, provision_vps, diff=True)
    out = capsys.readouterr().out
    assert in_host("vps", STATE) == before, f"root wrote through the planted link ({plant})"
    assert shadow_line and shadow_line not in out and "$y$" not in out  # not even shown in a diff
    if EXPECTED[plant] is None:
        assert code == 0, out
        keys = f"{HOME}/.ssh/authorized_keys"
        assert in_host("vps", f"[ -L {keys} ] || stat -c %U:%a {keys}").strip() == "pitunnel:600"
        assert "planted" not in in_host("vps", f"cat {keys}")  # rewritten, with only the Pis' keys
    else:
        assert code == 2 and EXPECTED[plant] in out, out
        assert "failed       vps        authorized keys of the Pis" in out or \
            f"failed       vps        directory {HOME}/.ssh" in out
    assert new_remote(inventory).can_log_in_fresh(within=5)
