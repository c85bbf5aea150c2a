"""`ssh-config --write`'s files (pitunnel/sshfiles.py) under a temp HOME, without an inventory: what each
outcome says, what --check shows of a change (the diff, exactly), pins that go away, files pitunnel may not
write, and which `Include` lines of the user's ~/.ssh/config name pitunnel's file as OpenSSH reads them."""

from __future__ import annotations

import stat
from pathlib import Path

from pitunnel import sshfiles

M = sshfiles.MARKER
CONFIG = f"{M}\nHost pi1\n    HostName 127.0.0.1\n"
PINS = f"{M}\n[127.0.0.1]:12346 ssh-ed25519 AAAA\n"


def write(home: Path, config: str = CONFIG, pins: str = PINS, *, check: bool = False) -> tuple[bool, list[str]]:
    said: list[str] = []
    return sshfiles.write(home, config, pins, check=check, say=said.append), said


def test_its_own_file_with_bytes_not_utf8_after_the_marker_is_still_its_own_and_written_over(tmp_path: Path) -> None:
    conf, _ = sshfiles.paths(tmp_path)
    conf.parent.mkdir()
    conf.write_bytes(M.encode() + b"\nHost caf\xe9\n")
    pins = conf.with_name("pitunnel.known_hosts")
    pins.write_bytes(M.encode() + b"\n\xff\n")
    assert write(tmp_path)[0]
    assert conf.read_text() == CONFIG and pins.read_text() == PINS


def test_an_include_with_an_equals_sign_in_its_path_names_that_path(tmp_path: Path) -> None:
    conf = tmp_path / "a=b" / ".ssh" / "pitunnel.conf"
    assert sshfiles.includes(f"Include={conf}\n", conf, home=conf.parent)
    assert sshfiles.includes(f"Include {conf}\n", conf, home=conf.parent)


def test_a_users_ssh_config_not_in_utf8_gets_the_include_and_keeps_its_bytes(tmp_path: Path) -> None:
    (tmp_path / ".ssh").mkdir()
    config, conf = tmp_path / ".ssh" / "config", sshfiles.paths(tmp_path)[0]
    mine = b"# caf\xe9 (latin-1)\nHost *\n    User me\n"
    config.write_bytes(mine)
    assert write(tmp_path)[0]
    assert config.read_bytes() == f"{sshfiles.INCLUDE_COMMENT}\nInclude {conf}\n\n".encode() + mine
    assert config.with_name("config.pitunnel-backup").read_bytes() == mine
    assert not write(tmp_path)[0]
