"""`pitunnel ssh-config` and `pitunnel ssh` without the network: the Host blocks as the system's OpenSSH reads
them (`ssh -G`), the ProxyCommand's order and fallback run by a real shell, the files --write keeps under a
temp HOME (the user's own lines untouched, a second run a no-op, --check writing nothing), and `pitunnel ssh`
exec'ing ssh (a stand-in on PATH) with the command and exit code passed through."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pitunnel import sshfiles, sshroutes
from pitunnel.inventory import load_inventory

PITUNNEL = str(Path(sys.executable).with_name("pitunnel"))
PIN = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
INVENTORY = """
settings:
  known_hosts: known_hosts
  laptop_key: key
defaults:
  key: key
vps:
  main: {address: 203.0.113.10, port: 2222, user: admin}
  backup: {address: 203.0.113.20, user: admin, connect_timeout: 4}
pis:
  pi1:
    address: 192.168.1.50
    vps: [main, backup]
    tunnels:
      ssh: {type: ssh, local_port: 22, remote_port: 12346, public: true}
  pi2:
    address: 192.168.1.51
    vps: main
    user: alice
    tunnels:
      ssh: {type: ssh, local_port: 22, remote_port: 20001}
  pi3:
    address: 192.168.1.52
    vps: backup
    host_key: PIN
    tunnels:
      ssh: {type: ssh, local_port: 22, remote_port: 12350, public: true}
  web-only:
    address: 192.168.1.53
    vps: main
    tunnels:
      web: {type: http, local_port: 80}
""".replace("PIN", PIN)


@pytest.fixture
def inv_file(tmp_path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "key")], check=True)
    (tmp_path / "known_hosts").write_text("")
    file = tmp_path / "hosts.yml"
    file.write_text(INVENTORY)
    return file


def rendered(inv_file: Path) -> tuple[Path, sshroutes.Written]:
    conf, pins = inv_file.with_name("pitunnel.conf"), inv_file.with_name("pitunnel.known_hosts")
    written = sshroutes.render(load_inventory(inv_file), conf, pins)
    conf.write_text(written.config)
    return conf, written


def ssh_g(config: Path, host: str) -> dict[str, str]:
    """What OpenSSH makes of `host` with this config (`ssh -G`: parsed, nothing connected)."""
    out = subprocess.run(["ssh", "-G", "-F", str(config), host], capture_output=True, text=True, check=True,
                         stdin=subprocess.DEVNULL).stdout
    return {k: v for k, _, v in (line.partition(" ") for line in out.splitlines())}


def test_one_route_public_port_or_jump_host_with_every_host_key_pinned_as_pitunnel_files_it(inv_file: Path) -> None:
    conf, _ = rendered(inv_file)
    known = str(inv_file.with_name("known_hosts"))
    pi2 = ssh_g(conf, "pi2")  # loopback-only: the VPS as jump host, the Pi's key under its own name
    assert (pi2["hostname"], pi2["port"], pi2["proxyjump"], pi2["user"]) == ("127.0.0.1", "20001", "main", "alice")
    assert (pi2["hostkeyalias"], pi2["userknownhostsfile"], pi2["stricthostkeychecking"]) == \
        ("192.168.1.51", known, "true")
    assert pi2["globalknownhostsfile"] == "/dev/null" and pi2["updatehostkeys"] == "false"
    assert pi2["identityfile"] == str(inv_file.with_name("key"))
    main = ssh_g(conf, "main")  # the jump host: its own key under [address]:port, as pitunnel records it
    assert (main["hostname"], main["port"], main["user"], main["userknownhostsfile"]) == \
        ("203.0.113.10", "2222", "admin", known)
    assert "hostkeyalias" not in main and "proxyjump" not in main
    pi3 = ssh_g(conf, "pi3")  # public: the VPS's public port, the inventory's pin alone
    assert (pi3["hostname"], pi3["port"], pi3["hostkeyalias"]) == ("203.0.113.20", "12350", "192.168.1.52")
    assert "proxyjump" not in pi3 and "proxycommand" not in pi3
    assert pi3["userknownhostsfile"] == str(inv_file.with_name("pitunnel.known_hosts"))
    assert "Host web-only" not in conf.read_text()  # no ssh tunnel: no route from away


def test_pins_file_holds_the_inventory_pins_under_the_hosts_key_names(inv_file: Path) -> None:
    _, written = rendered(inv_file)
    assert written.pins.splitlines()[0].startswith(sshfiles.MARKER)
    assert written.pins.splitlines()[1:] == [f"192.168.1.52 {PIN}"]


def test_two_vpses_try_each_in_inventory_order_and_each_route_has_its_own_alias(inv_file: Path) -> None:
    conf, _ = rendered(inv_file)
    pi1 = ssh_g(conf, "pi1")
    assert pi1["hostkeyalias"] == "192.168.1.50"
    assert pi1["connecttimeout"] == str(10 + 4 + 10)  # the outer ssh waits for the banner through both tries
    command = pi1["proxycommand"]
    assert command.index(" main") < command.index(" backup"), command
    assert (ssh_g(conf, "pi1.main")["hostname"], ssh_g(conf, "pi1.main")["port"]) == ("203.0.113.10", "12346")
    assert (ssh_g(conf, "pi1.backup")["hostname"], ssh_g(conf, "pi1.backup")["port"]) == ("203.0.113.20", "12346")


def fake_ssh(folder: Path, script: str) -> dict[str, str]:
    """PATH with an `ssh` of our own first: it runs `script` (its argv in "$@")."""
    folder.mkdir(exist_ok=True)
    fake = folder / "ssh"
    fake.write_text(f"#!/bin/sh\n{script}\n")
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{folder}:{os.environ['PATH']}"}


def test_the_proxy_command_falls_through_to_the_next_vps_only_when_one_fails(inv_file: Path, tmp_path: Path) -> None:
    conf, _ = rendered(inv_file)
    command = ssh_g(conf, "pi1")["proxycommand"]
    env = fake_ssh(tmp_path / "bin", 'echo "$@" >> "$LOG"; case "$*" in *" $DOWN") exit 255;; esac; echo up')
    for down, tried in (("main", ["main", "backup"]), ("nothing", ["main"])):
        log = tmp_path / f"{down}.log"
        done = subprocess.run(["sh", "-c", f"exec {command}"], env={**env, "LOG": str(log), "DOWN": down},
                              capture_output=True, text=True, timeout=10)
        assert done.stdout == "up\n"
        assert [line.split()[-1] for line in log.read_text().splitlines()] == tried
        assert log.read_text().split("\n")[0].split()[:4] == ["-F", str(conf), "-W", "127.0.0.1:12346"]


def write(home: Path, inv_file: Path, *, check: bool = False) -> tuple[bool, list[str]]:
    said: list[str] = []
    conf, pins = sshfiles.paths(home)
    written = sshroutes.render(load_inventory(inv_file), conf, pins)
    return sshfiles.write(home, written.config, written.pins, check=check, say=said.append), said


def test_write_creates_ssh_folder_and_config_and_a_second_run_changes_nothing(inv_file: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    changed, said = write(home, inv_file, check=True)
    assert changed and not (home / ".ssh").exists(), said  # --check: nothing written
    assert write(home, inv_file)[0]
    ssh_dir, config = home / ".ssh", home / ".ssh" / "config"
    assert [stat.S_IMODE(p.stat().st_mode) for p in (ssh_dir, config, ssh_dir / "pitunnel.conf",
                                                       ssh_dir / "pitunnel.known_hosts")] == [0o700, 0o600, 0o600, 0o600]
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in ssh_dir.iterdir()}
    changed, said = write(home, inv_file)
    assert not changed and all("up to date" in s or "already" in s for s in said), said
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in ssh_dir.iterdir()} == before
    assert ssh_g(config, "pi2")["proxyjump"] == "main"  # through the Include


def test_include_goes_first_and_nothing_else_of_the_users_file_changes(inv_file: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    mine = "# my hosts\nHost pi2\n    User bob\n    Port 2\n\nHost *\n    ServerAliveInterval 7\n"
    dotfiles = tmp_path / "dotfiles-config"
    dotfiles.write_text(mine)
    dotfiles.chmod(0o640)
    (home / ".ssh" / "config").symlink_to(dotfiles)
    changed, said = write(home, inv_file, check=True)
    assert changed and dotfiles.read_text() == mine and any("would add `Include" in s for s in said), said
    write(home, inv_file)
    text = dotfiles.read_text()
    assert (home / ".ssh" / "config").is_symlink()  # written through the link
    assert text.startswith(f"{sshfiles.INCLUDE_COMMENT}\nInclude {home}/.ssh/pitunnel.conf\n") and text.endswith(mine)
    assert stat.S_IMODE(dotfiles.stat().st_mode) == 0o640
    assert Path(f"{dotfiles}.pitunnel-backup").read_text() == mine
    pi2 = ssh_g(home / ".ssh" / "config", "pi2")  # the Include comes first: pitunnel's blocks win for its hosts
    assert (pi2["user"], pi2["port"], pi2["serveraliveinterval"]) == ("alice", "20001", "7")
    assert not write(home, inv_file)[0]


def test_an_include_below_a_host_line_does_not_count_and_a_foreign_file_is_refused(inv_file: Path,
                                                                                   tmp_path: Path) -> None:
    conf = tmp_path / ".ssh" / "pitunnel.conf"
    assert sshfiles.includes("Include pitunnel.conf\nHost x\n", conf, home=conf.parent)
    assert sshfiles.includes("# c\nInclude ~/nope *.conf\n", conf, home=conf.parent)
    assert not sshfiles.includes("Host x\nInclude pitunnel.conf\n", conf, home=conf.parent)
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "pitunnel.conf").write_text("Host mine\n")
    with pytest.raises(sshfiles.NotOurs, match="pitunnel did not write it"):
        write(home, inv_file)
    assert (home / ".ssh" / "pitunnel.conf").read_text() == "Host mine\n"
    assert not (home / ".ssh" / "config").exists()


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PITUNNEL, *args], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_pitunnel_ssh_execs_ssh_with_the_cached_config_the_command_and_its_exit_code(inv_file: Path,
                                                                                     tmp_path: Path) -> None:
    env = {**fake_ssh(tmp_path / "bin", 'printf "%s\\n" "$@"; exit 7'), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = run(["ssh", "pi2", "-i", str(inv_file), "--", "ls", "-l", "a b"], env)
    assert done.returncode == 7, done.stderr
    argv = done.stdout.splitlines()
    assert argv[0] == "-F" and argv[2:] == ["pi2", "ls", "-l", "a b"]
    cached = Path(argv[1])
    assert cached.is_relative_to(tmp_path / "cache") and stat.S_IMODE(cached.stat().st_mode) == 0o600
    assert ssh_g(cached, "pi2")["proxyjump"] == "main" and done.stderr == ""
    assert "ProxyCommand sh -c 'ssh -F " + str(cached) in cached.read_text()  # the chain reads the same file
    (tmp_path / "file").write_text("")
    blocked = run(["ssh", "pi2", "-i", str(inv_file)], {**env, "XDG_CACHE_HOME": str(tmp_path / "file")})
    assert blocked.returncode == 3 and "cannot write its ssh config" in blocked.stderr and blocked.stdout == ""
    for name, why in (("web-only", "it has no ssh tunnel"), ("pi9", "no host of")):
        refused = run(["ssh", name, "-i", str(inv_file)], env)
        assert refused.returncode == 3 and why in refused.stderr and refused.stdout == "", refused.stderr


def test_ssh_config_prints_the_blocks_and_write_says_nothing_changed_the_second_time(inv_file: Path,
                                                                                    tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    printed = run(["ssh-config", "-i", str(inv_file)], env)
    assert printed.returncode == 0 and printed.stdout.startswith(sshfiles.MARKER)
    assert "Host pi1.backup" in printed.stdout and not (tmp_path / "home").exists()
    assert run(["ssh-config", "-i", str(inv_file), "--write", "--check"], env).returncode == 0
    assert not (tmp_path / "home").exists()
    first = run(["ssh-config", "-i", str(inv_file), "-w"], env)
    assert first.returncode == 0 and "ssh-config: done" in first.stdout, first.stderr
    assert run(["ssh-config", "-i", str(inv_file), "-w"], env).stdout.splitlines()[-1] == "ssh-config: nothing to change"


def test_the_ssh_config_the_inventory_names_gives_key_names_users_and_keys_as_pitunnel_follows_it(
        inv_file: Path) -> None:
    """`settings: ssh_config:`: a HostKeyAlias there is the name the key is filed under (so checked under it),
    its User and IdentityFile apply where the inventory says nothing, as for pitunnel's own connections."""
    user_config = inv_file.with_name("ssh_config")
    user_config.write_text(f"Host 192.168.1.51\n    HostKeyAlias pi-home\n    User bob\n"
                           f"Host 192.168.1.50\n    User carol\n    IdentityFile {inv_file.with_name('key2')}\n")
    inv_file.write_text(inv_file.read_text().replace("  laptop_key: key\n", "  laptop_key: key\n  ssh_config: ssh_config\n"))
    conf, _ = rendered(inv_file)
    pi2 = ssh_g(conf, "pi2")
    assert (pi2["hostkeyalias"], pi2["user"]) == ("pi-home", "alice")  # the inventory's user wins
    pi1 = ssh_g(conf, "pi1.main")
    assert pi1["user"] == "carol" and "HostKeyAlias 192.168.1.50" in conf.read_text()
    assert f"IdentityFile {inv_file.with_name('key2')}" in conf.read_text().split("Host pi1.main")[1].split("Host ")[0]


def test_each_block_says_in_a_comment_what_it_is_and_the_pins_file_holds_key_type_and_key_alone(inv_file: Path) -> None:
    inv_file.write_text(INVENTORY.replace(PIN, f"{PIN} root@pi3"))
    conf, written = rendered(inv_file)
    assert [line for line in written.config.splitlines() if line.startswith("# ")][2:] == [
        "# the VPS main: its own sshd", "# the VPS backup: its own sshd",
        "# pi1 through main, then backup (each VPS as jump host; the next when one fails)",
        "# pi1 through main's public port 12346", "# pi1 through backup's public port 12346",
        "# pi2 through main as jump host, to its tunnel at 127.0.0.1:20001 there",
        "# pi3 through backup's public port 12350"]
    assert written.config.splitlines()[0].startswith(f"# Written by pitunnel ssh-config from {inv_file.absolute()}: ")
    assert written.pins == (f"{sshfiles.MARKER}: host keys pinned in {inv_file.absolute()} (host_key)\n"
                            f"192.168.1.52 {PIN}\n")
