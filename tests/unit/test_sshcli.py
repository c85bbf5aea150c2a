"""The bodies of `pitunnel ssh` and `pitunnel ssh-config` (sshcli.py) called in this process: which names reach
a Pi and why the others do not, the cached config (private, rewritten only when the routes change), the argv
handed to OpenSSH, and what ssh-config prints and writes. test_ssh_config.py runs the same as a program."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
from invoke import Exit

from pitunnel import sshcli, sshfiles
from pitunnel.inventory import load_inventory
from pitunnel.taskkit import Flags
from tests.unit.test_ssh_config import PIN, inv_file  # noqa: F401 (the fixture)


class Execd(Exception):
    """os.execv was called: its program and argv."""


@pytest.fixture
def execv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []

    def fake(program: str, argv: list[str]) -> None:
        calls.append((program, argv))
        raise Execd

    monkeypatch.setattr(os, "execv", fake)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return calls


def refused(flags: Flags, name: str) -> str:
    with pytest.raises(Exit) as caught:
        sshcli.ssh(flags, name, [])
    assert caught.value.code == 3
    return str(caught.value.message)


def test_ssh_execs_openssh_with_the_cached_config_the_name_and_the_command(
        inv_file: Path, execv: list[tuple[str, list[str]]], tmp_path: Path) -> None:  # noqa: F811
    flags = Flags(inventory=str(inv_file))
    with pytest.raises(Execd):
        sshcli.ssh(flags, "pi2", ["ls", "-l", "a b"])
    ((program, argv),) = execv
    assert Path(program).name == "ssh" and os.access(program, os.X_OK)
    assert argv[0] == "ssh" and argv[1] == "-F" and argv[3:] == ["pi2", "ls", "-l", "a b"]
    conf = Path(argv[2])
    assert conf.parent == tmp_path / "cache" / "pitunnel" / "ssh" and conf.suffix == ".conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600 and stat.S_IMODE(conf.parent.stat().st_mode) == 0o700
    assert "Host pi2" in conf.read_text()
    pins = conf.with_suffix(".known_hosts")
    assert pins.exists() and stat.S_IMODE(pins.stat().st_mode) == 0o600  # pi3's pinned key
    before = conf.stat().st_ino
    for name in ("main", "pi1"):  # a VPS of a Pi is a name too; the same routes: the file is not written again
        with pytest.raises(Execd):
            sshcli.ssh(flags, name, [])
    assert conf.stat().st_ino == before and execv[-1][1][3:] == ["pi1"]
    inv_file.write_text(inv_file.read_text().replace("remote_port: 20001", "remote_port: 20002"))
    with pytest.raises(Execd):
        sshcli.ssh(flags, "pi2", [])
    assert conf.stat().st_ino != before and "20002" in conf.read_text()  # new routes: written again


def test_each_inventory_has_its_own_cached_config(inv_file: Path, execv: list[tuple[str, list[str]]]) -> None:  # noqa: F811
    other = inv_file.with_name("other.yml")
    other.write_text(inv_file.read_text())
    for file in (inv_file, other):
        with pytest.raises(Execd):
            sshcli.ssh(Flags(inventory=str(file)), "pi2", [])
    assert execv[0][1][2] != execv[1][1][2]


def test_ssh_refuses_a_name_it_cannot_reach_saying_why_and_which_it_can(
        inv_file: Path, execv: list[tuple[str, list[str]]]) -> None:  # noqa: F811
    flags = Flags(inventory=str(inv_file))
    web = refused(flags, "web-only")
    assert web.startswith("ssh: cannot reach 'web-only': it has no ssh tunnel, so there is no way to it from away. "
                          "Fix: give a Pi with an ssh tunnel (pi1, pi2, pi3) or one of their VPSes"), web
    assert "no host of" in refused(flags, "pi9") and str(inv_file) in refused(flags, "pi9")
    assert execv == []


def test_ssh_without_openssh_or_a_writable_cache_says_the_fix(
        inv_file: Path, execv: list[tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:  # noqa: F811
    flags = Flags(inventory=str(inv_file))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    assert "cannot write its ssh config under" in refused(flags, "pi2")
    assert "set XDG_CACHE_HOME to a folder that is" in refused(flags, "pi2")
    monkeypatch.setattr(sshcli.shutil, "which", lambda name: None)
    assert refused(flags, "pi2") == ("ssh: no `ssh` on PATH. Fix: install OpenSSH's client (Debian: apt install "
                                     "openssh-client)")
    assert execv == []


def test_the_cache_is_under_home_when_xdg_cache_home_is_not_set(
        inv_file: Path, execv: list[tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:  # noqa: F811
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conf = sshcli.cached(load_inventory(inv_file, save_allocations=False))
    assert conf.parent == tmp_path / "home" / ".cache" / "pitunnel" / "ssh"


@pytest.mark.parametrize(("argv", "command"), [
    (["pitunnel", "ssh", "pi1", "--", "ls", "--", "-l"], ["ls", "--", "-l"]),
    (["pitunnel", "ssh", "pi1"], []),
    (["pitunnel", "ssh", "pi1", "--"], []),
])
def test_the_command_is_what_follows_the_first_double_dash(argv: list[str], command: list[str]) -> None:
    assert sshcli.command_after_dashes(argv) == command


def test_ssh_config_prints_the_blocks_and_says_where_write_puts_the_pins(
        inv_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sshcli.ssh_config(Flags(inventory=str(inv_file)), write=False)
    out, err = capsys.readouterr()
    assert out.startswith(sshfiles.MARKER) and "Host pi1.backup" in out
    pins = sshfiles.paths(tmp_path / "home")[1]
    assert f"(the inventory's pinned host keys go to {pins} with --write)" in err
    assert not (tmp_path / "home").exists()


def test_ssh_config_write_says_done_then_nothing_to_change_and_check_writes_nothing(
        inv_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sshcli.ssh_config(Flags(inventory=str(inv_file), check=True), write=True)
    assert not (tmp_path / "home").exists()
    assert "ssh-config: done" not in capsys.readouterr().out
    sshcli.ssh_config(Flags(inventory=str(inv_file)), write=True)
    assert capsys.readouterr().out.splitlines()[-1] == ("ssh-config: done; `ssh pi1`, scp and rsync reach the Pis by "
                                                       "name")
    conf = sshfiles.paths(tmp_path / "home")[0]
    assert conf.exists() and "Host pi2" in conf.read_text()
    sshcli.ssh_config(Flags(inventory=str(inv_file)), write=True)
    assert capsys.readouterr().out.splitlines()[-1] == "ssh-config: nothing to change"


def test_ssh_config_write_refuses_a_file_it_did_not_write(inv_file: Path, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:  # noqa: F811
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conf = sshfiles.paths(tmp_path / "home")[0]
    conf.parent.mkdir(parents=True)
    conf.write_text("Host mine\n    User me\n")
    with pytest.raises(Exit) as caught:
        sshcli.ssh_config(Flags(inventory=str(inv_file)), write=True)
    assert caught.value.code == 3 and str(caught.value.message).startswith("ssh-config --write: ")
    assert conf.read_text() == "Host mine\n    User me\n"


def test_ssh_prints_nothing_of_its_own_before_openssh_takes_the_terminal(
        inv_file: Path, execv: list[tuple[str, list[str]]], capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    with pytest.raises(Execd):  # web-only's tunnel port is auto and not recorded: ssh-config would say so, not ssh
        sshcli.ssh(Flags(inventory=str(inv_file)), "pi2", ["uptime"])
    assert capsys.readouterr() == ("", "")  # a command's output on the Pi is the output of `pitunnel ssh`
    assert not inv_file.with_name("hosts.ports.yml").exists()  # no task that changes no host writes the ports file


def test_ssh_config_says_which_inventory_and_which_ports_are_not_recorded_and_records_none(
        inv_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    sshcli.ssh_config(Flags(inventory=str(inv_file)), write=False)
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [f"inventory: {inv_file} (from -i)",
                       f"ports: auto ports not recorded yet (web-only/web@main); a provisioning run records them in "
                       f"{inv_file.with_name('hosts.ports.yml')}"]
    assert not inv_file.with_name("hosts.ports.yml").exists()


def test_the_blocks_name_their_own_files_for_the_fallback_and_the_pins(
        inv_file: Path, execv: list[tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """pi1 has two VPSes: its ProxyCommand runs `ssh -F` on the very file the blocks are in; pi3's pinned key is
    checked from the pins file beside it. Printed, written under ~/.ssh, and cached for `pitunnel ssh`."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    conf, pins = sshfiles.paths(tmp_path / "home")
    sshcli.ssh_config(Flags(inventory=str(inv_file)), write=False)
    printed = capsys.readouterr().out
    assert f"ssh -F {conf} -W 127.0.0.1:12346 main" in printed and f"UserKnownHostsFile {pins}" in printed
    sshcli.ssh_config(Flags(inventory=str(inv_file)), write=True)
    assert conf.read_text() == printed
    assert pins.read_text().splitlines()[1:] == [f"192.168.1.52 {PIN}"]  # the inventory's pin, for pi3
    with pytest.raises(Execd):
        sshcli.ssh(Flags(inventory=str(inv_file)), "pi1", [])
    cached = Path(execv[0][1][2])
    text = cached.read_text()
    assert f"ssh -F {cached} -W 127.0.0.1:12346 main" in text
    assert f"UserKnownHostsFile {cached.with_suffix('.known_hosts')}" in text
    assert cached.with_suffix(".known_hosts").read_text() == pins.read_text()


def test_ssh_config_of_an_inventory_without_pis_says_done_without_naming_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "hosts.yml").write_text("vps:\n  main: {address: 203.0.113.10}\n")
    sshcli.ssh_config(Flags(inventory=str(tmp_path / "hosts.yml")), write=True)
    assert capsys.readouterr().out.splitlines()[-1] == "ssh-config: done"


def test_ssh_says_why_a_revoked_pi_or_a_vps_of_no_pi_is_not_reached(
        inv_file: Path, execv: list[tuple[str, list[str]]]) -> None:  # noqa: F811
    from pitunnel.inventory.model import Revoked
    from pitunnel.inventory.revoked import revoked_file, write_revoked

    inv_file.write_text(inv_file.read_text().replace("vps:\n", "vps:\n  spare: {address: 203.0.113.30}\n", 1))
    write_revoked(revoked_file(inv_file), {"pi2": Revoked("pi2", "2026-12-06T05:00:00Z")})
    flags = Flags(inventory=str(inv_file))
    assert refused(flags, "pi2").startswith("ssh: cannot reach 'pi2': it is revoked (since 2026-12-06T05:00:00Z). "
                                            "Fix: give a Pi with an ssh tunnel (pi1, pi3) or one of their VPSes")
    assert refused(flags, "spare").startswith("ssh: cannot reach 'spare': the VPS of no Pi here. Fix:")
    assert execv == []


def test_ssh_with_no_pi_to_reach_says_none_here(tmp_path: Path, execv: list[tuple[str, list[str]]]) -> None:
    (tmp_path / "hosts.yml").write_text("vps:\n  main: {address: 203.0.113.10}\n")
    assert refused(Flags(inventory=str(tmp_path / "hosts.yml")), "pi1") == (
        f"ssh: cannot reach 'pi1': no host of {tmp_path / 'hosts.yml'} has that name. Fix: give a Pi with an ssh "
        "tunnel (none here) or one of their VPSes")


def test_an_ssh_config_pitunnel_cannot_follow_is_a_usage_error_naming_its_line(
        inv_file: Path, execv: list[tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "ssh_config").write_text("Host 192.168.1.51\n    ProxyCommand nc %h %p\n")  # pi2's address
    inv_file.write_text(inv_file.read_text().replace("settings:\n", f"settings:\n  ssh_config: {tmp_path}/ssh_config\n"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for call in (lambda: sshcli.ssh(Flags(inventory=str(inv_file)), "pi2", []),
                 lambda: sshcli.ssh_config(Flags(inventory=str(inv_file)), write=False)):
        with pytest.raises(Exit) as caught:
            call()
        assert caught.value.code == 3 and caught.value.message == (
            "the ssh config gives 192.168.1.51 a ProxyCommand, which pitunnel does not run: use ProxyJump there, or "
            "'ssh_config: none' in the inventory")
    assert execv == [] and not (tmp_path / "home").exists()


def test_a_cache_that_cannot_be_written_is_named_with_the_systems_reason(
        inv_file: Path, execv: list[tuple[str, list[str]]], monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:  # noqa: F811
    flags = Flags(inventory=str(inv_file))
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))
    assert refused(flags, "pi2") == (f"ssh: cannot write its ssh config under {tmp_path / 'file' / 'pitunnel' / 'ssh'} "
                                     "(Not a directory). Fix: make it writable, or set XDG_CACHE_HOME to a folder that is")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    def full(file: Path, text: str, *, mode: int) -> None:  # a full disk: the write's error names no file
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(sshfiles, "replace", full)
    assert refused(flags, "pi2") == ("ssh: cannot write its ssh config under the cache folder (No space left on "
                                     "device). Fix: make it writable, or set XDG_CACHE_HOME to a folder that is")
    assert execv == []
