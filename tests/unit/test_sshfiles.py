"""`ssh-config --write`'s files (pitunnel/sshfiles.py) under a temp HOME, without an inventory: what each
outcome says, what --check shows of a change (the diff, exactly), pins that go away, files pitunnel may not
write, and which `Include` lines of the user's ~/.ssh/config name pitunnel's file as OpenSSH reads them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pitunnel import sshfiles

M = sshfiles.MARKER
CONFIG = f"{M}\nHost pi1\n    HostName 127.0.0.1\n"
PINS = f"{M}\n[127.0.0.1]:12346 ssh-ed25519 AAAA\n"


def write(home: Path, config: str = CONFIG, pins: str = PINS, *, check: bool = False) -> tuple[bool, list[str]]:
    said: list[str] = []
    return sshfiles.write(home, config, pins, check=check, say=said.append), said


def test_a_missing_home_and_ssh_folder_are_created_and_said_check_only_says_it(tmp_path: Path) -> None:
    home = tmp_path / "no" / "home"
    changed, said = write(home, check=True)
    assert changed and said[0] == f"would create {home / '.ssh'} (mode 700)" and not home.exists()
    changed, said = write(home)
    assert changed and said[0] == f"created {home / '.ssh'} (mode 700)"
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700


def test_a_file_pitunnel_did_not_write_stops_the_run_with_the_fix(tmp_path: Path) -> None:
    conf, _ = sshfiles.paths(tmp_path)
    conf.parent.mkdir()
    conf.write_text("Host mine\n")
    with pytest.raises(sshfiles.NotOurs) as caught:
        write(tmp_path)
    assert str(caught.value).endswith("pitunnel leaves it as it is. Fix: move it away, then run ssh-config --write "
                                      "again")


@pytest.mark.parametrize("what", ["folder", "dangling link"])
def test_a_path_pitunnel_cannot_read_is_not_taken_for_its_own(tmp_path: Path, what: str) -> None:
    conf, _ = sshfiles.paths(tmp_path)
    conf.parent.mkdir()
    if what == "folder":
        conf.mkdir()
    else:
        conf.symlink_to(tmp_path / "gone")
    with pytest.raises(sshfiles.NotOurs, match="pitunnel did not write it"):
        write(tmp_path)
    assert not (conf.parent / "config").exists()


def test_its_own_file_with_bytes_not_utf8_after_the_marker_is_still_its_own_and_written_over(tmp_path: Path) -> None:
    conf, _ = sshfiles.paths(tmp_path)
    conf.parent.mkdir()
    conf.write_bytes(M.encode() + b"\nHost caf\xe9\n")
    pins = conf.with_name("pitunnel.known_hosts")
    pins.write_bytes(M.encode() + b"\n\xff\n")
    assert write(tmp_path)[0]
    assert conf.read_text() == CONFIG and pins.read_text() == PINS


def test_pins_no_longer_in_the_inventory_remove_the_file_and_that_alone_is_a_change(tmp_path: Path) -> None:
    write(tmp_path)
    _, pins = sshfiles.paths(tmp_path)
    changed, said = write(tmp_path, pins="", check=True)
    assert changed and pins.exists()
    assert f"would remove {pins} (no host key is pinned in the inventory now)" in said, said
    changed, said = write(tmp_path, pins="")
    assert changed and not pins.exists()
    assert f"removed {pins} (no host key is pinned in the inventory now)" in said, said
    assert write(tmp_path, pins="") == (False, [f"{sshfiles.paths(tmp_path)[0]}: up to date",
                                                f"{tmp_path / '.ssh' / 'config'}: includes "
                                                f"{sshfiles.paths(tmp_path)[0]} already"])


def test_a_changed_config_alone_is_a_change_check_shows_its_exact_diff_and_a_write_says_so(tmp_path: Path) -> None:
    write(tmp_path)
    conf, _ = sshfiles.paths(tmp_path)
    new = f"{M}\nHost pi1\n    HostName 127.0.0.2\nHost piX\n"
    changed, said = write(tmp_path, new, check=True)
    assert changed and conf.read_text() == CONFIG
    assert said[0] == (f"would write {conf} (mode 600):\n--- {conf}\n+++ {conf}\n@@ -1,3 +1,4 @@\n"
                       f" {M}\n Host pi1\n-    HostName 127.0.0.1\n+    HostName 127.0.0.2\n+Host piX")
    changed, said = write(tmp_path, new)
    assert changed and said[0] == f"wrote {conf} (mode 600)" and conf.read_text() == new


def test_check_shows_a_new_file_whole_and_keeps_trailing_spaces_of_its_last_line(tmp_path: Path) -> None:
    new = f"{M}\nHost pi1  \n"
    conf, _ = sshfiles.paths(tmp_path)
    changed, said = write(tmp_path, new, check=True)
    assert changed and said[1] == (f"would write {conf} (mode 600):\n--- {conf}\n+++ {conf}\n@@ -0,0 +1,2 @@\n"
                                   f"+{M}\n+Host pi1  ")


def test_the_include_alone_missing_is_a_change_said_with_where_the_copy_goes(tmp_path: Path) -> None:
    write(tmp_path)
    config = tmp_path / ".ssh" / "config"
    config.write_text("Host *\n    User me\n")
    conf = sshfiles.paths(tmp_path)[0]
    backup = tmp_path / ".ssh" / "config.pitunnel-backup"
    changed, said = write(tmp_path, check=True)
    assert changed and said[-1] == f"would add `Include {conf}` at the top of {config} (a copy as it was: {backup})"
    assert config.read_text() == "Host *\n    User me\n"
    changed, said = write(tmp_path)
    assert changed and said[-1] == f"added `Include {conf}` at the top of {config} (as it was: {backup})"
    assert backup.read_text() == "Host *\n    User me\n"
    assert config.read_text() == f"{sshfiles.INCLUDE_COMMENT}\nInclude {conf}\n\nHost *\n    User me\n"


def test_a_new_ssh_config_is_said_to_be_new_with_mode_600(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    config, conf = tmp_path / ".ssh" / "config", sshfiles.paths(tmp_path)[0]
    assert write(tmp_path, check=True)[1][-1] == f"would add `Include {conf}` at the top of {config} (a new file, mode 600)"
    assert write(tmp_path)[1][-1] == f"added `Include {conf}` at the top of {config} (a new file, mode 600)"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert not config.with_name("config.pitunnel-backup").exists()


def test_a_relative_include_in_the_users_config_counts_and_nothing_is_added(tmp_path: Path) -> None:
    write(tmp_path, check=True)
    (tmp_path / ".ssh").mkdir()
    config = tmp_path / ".ssh" / "config"
    config.write_text("Include pitunnel.conf\nHost *\n")
    changed, said = write(tmp_path)
    assert said[-1] == f"{config}: includes {sshfiles.paths(tmp_path)[0]} already"
    assert config.read_text() == "Include pitunnel.conf\nHost *\n"


@pytest.mark.parametrize("text", [
    "Include=pitunnel.conf\n",
    "include = pitunnel.conf\n",
    "\n   \n#\n# Host x\nInclude pitunnel.conf\n",
    "Include\nInclude pitunnel.conf\n",
    'Include "unclosed\nInclude pitunnel.conf\n',
    "Include ~/.ssh/pitunnel.conf\n",
    "Include ~/.ssh/*.conf\nHost x\n",
])
def test_includes_that_openssh_reads_as_naming_pitunnels_file(tmp_path: Path, text: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = sshfiles.paths(tmp_path)[0]
    assert sshfiles.includes(text, conf, home=conf.parent)


def test_an_include_with_an_equals_sign_in_its_path_names_that_path(tmp_path: Path) -> None:
    conf = tmp_path / "a=b" / ".ssh" / "pitunnel.conf"
    assert sshfiles.includes(f"Include={conf}\n", conf, home=conf.parent)
    assert sshfiles.includes(f"Include {conf}\n", conf, home=conf.parent)


@pytest.mark.parametrize("text", [
    "",
    "User bob\n",
    "IdentityFile pitunnel.conf\nHost *\n",
    "Match all\nInclude pitunnel.conf\n",
    "MATCH all\nInclude pitunnel.conf\n",
    "Include other.conf\nHost x\nInclude pitunnel.conf\n",
    "Include ~/elsewhere/pitunnel.conf\n",
])
def test_lines_that_do_not_include_pitunnels_file_above_the_first_host_or_match(
        tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = sshfiles.paths(tmp_path)[0]
    assert not sshfiles.includes(text, conf, home=conf.parent)


def test_a_users_ssh_config_not_in_utf8_gets_the_include_and_keeps_its_bytes(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    config, conf = tmp_path / ".ssh" / "config", sshfiles.paths(tmp_path)[0]
    mine = b"# caf\xe9 (latin-1)\nHost *\n    User me\n"
    config.write_bytes(mine)
    assert write(tmp_path)[0]
    assert config.read_bytes() == f"{sshfiles.INCLUDE_COMMENT}\nInclude {conf}\n\n".encode() + mine
    assert config.with_name("config.pitunnel-backup").read_bytes() == mine
    assert not write(tmp_path)[0]


def test_a_home_reached_through_a_linked_folder_keeps_its_names_in_what_is_said(tmp_path: Path) -> None:
    (tmp_path / "real" / ".ssh").mkdir(parents=True)
    home = tmp_path / "home"
    home.symlink_to(tmp_path / "real")
    (home / ".ssh" / "config").write_text("Host *\n")
    changed, said = write(home)
    conf, config = sshfiles.paths(home)[0], home / ".ssh" / "config"
    assert changed and said[-1] == (f"added `Include {conf}` at the top of {config} "
                                    f"(as it was: {home / '.ssh' / 'config.pitunnel-backup'})")


def test_its_own_file_with_the_same_text_but_another_mode_is_written_again_with_mode_600(tmp_path: Path) -> None:
    write(tmp_path)
    conf, pins = sshfiles.paths(tmp_path)
    conf.chmod(0o644)
    changed, said = write(tmp_path, check=True)
    assert changed and said[0] == f"would write {conf} (mode 600):\n" and stat.S_IMODE(conf.stat().st_mode) == 0o644
    changed, said = write(tmp_path)
    assert changed and said[:2] == [f"wrote {conf} (mode 600)", f"{pins}: up to date"]
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600 and conf.read_text() == CONFIG
    assert sorted(p.name for p in conf.parent.iterdir()) == ["config", "pitunnel.conf", "pitunnel.known_hosts"]


def test_a_file_is_never_readable_by_others_even_while_it_is_written(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, int]] = []
    chmod = os.chmod

    def watch(path: str | Path, mode: int) -> None:  # the half-written file, as it is before its mode is set
        seen.append((Path(path).name, stat.S_IMODE(os.stat(path).st_mode)))
        chmod(path, mode)

    monkeypatch.setattr(os, "chmod", watch)
    old = os.umask(0o022)
    try:
        sshfiles.replace(tmp_path / "config", "Host *\n", mode=0o644)
    finally:
        os.umask(old)
    assert seen == [("config.pitunnel-tmp", 0o600)]
    assert stat.S_IMODE((tmp_path / "config").stat().st_mode) == 0o644 and not (tmp_path / "config.pitunnel-tmp").exists()
