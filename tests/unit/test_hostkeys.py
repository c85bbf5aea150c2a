"""known_hosts as pitunnel reads and writes it (pure: files in tmp_path): a `@revoked` line's host patterns as
OpenSSH matches them, and a rewrite that keeps every other line, the file's mode, and adds no key twice."""

from __future__ import annotations

import stat
from pathlib import Path

import paramiko
import pytest

from pitunnel import hostkeys

KEY = paramiko.ECDSAKey.generate()
OTHER = paramiko.ECDSAKey.generate()
LINE = f"{KEY.get_name()} {KEY.get_base64()}"
OTHER_LINE = f"{OTHER.get_name()} {OTHER.get_base64()}"


@pytest.mark.parametrize(("field", "name", "revoked"), [
    ("10.0.0.?", "10.0.0.2", True),
    ("10.0.0.?", "10.0.0.22", False),  # `?` is one character
    ("10.0.0.?", "10.0.0.", False),
    ("*.example.com", "pi.example.com", True),
    ("Pi.Example.COM", "pi.example.com", True),  # names are not case-sensitive
    ("pi.example.com", "PI.example.com", True),
    ("*.example.com,!pi.example.com", "pi.example.com", False),  # a negated match wins
    ("other,10.0.0.2", "10.0.0.2", True),
    ("[10.0.0.2]:2222", "[10.0.0.2]:2222", True),
    ("10.0.0.3", "10.0.0.2", False),
])
def test_a_revoked_line_names_hosts_by_pattern_as_openssh(tmp_path: Path, field: str, name: str, revoked: bool) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"# mine\n10.0.0.2 {OTHER_LINE}\n@revoked {field} {LINE}\n")
    assert hostkeys.revoked_at(known, name, KEY) == (3 if revoked else None)
    assert hostkeys.revoked_at(known, name, OTHER) is None  # another key is not revoked by it


def test_a_revoked_line_with_a_hashed_name(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    hashed = paramiko.HostKeys.hash_host("10.0.0.2")
    known.write_text(f"@revoked {hashed} {LINE}\n")
    assert hostkeys.revoked_at(known, "10.0.0.2", KEY) == 1
    assert hostkeys.revoked_at(known, "10.0.0.3", KEY) is None
    assert hostkeys.revoked_at(tmp_path / "none", "10.0.0.2", KEY) is None


def test_rewrite_makes_the_file_and_its_folders_when_there_is_none(tmp_path: Path) -> None:
    known = tmp_path / "a" / "b" / "known_hosts"
    hostkeys.rewrite(known, "10.0.0.2", lambda key: True, [LINE])
    assert known.read_text() == f"10.0.0.2 {LINE}\n"


def test_rewrite_asks_about_each_key_of_the_name_and_keeps_the_rest_and_the_mode(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"# mine\n10.0.0.2 {LINE} a comment\n10.0.0.2 {OTHER_LINE}\n10.0.0.9 {OTHER_LINE}\n")
    known.chmod(0o600)
    asked: list[str] = []

    def keep(key: str) -> bool:
        asked.append(key)
        return key == LINE

    hostkeys.rewrite(known, "10.0.0.2", keep, [LINE])  # the key kept is not added again
    assert asked == [LINE, OTHER_LINE]  # each asked about as `type base64`, without the comment
    assert known.read_text() == f"# mine\n10.0.0.2 {LINE} a comment\n10.0.0.9 {OTHER_LINE}\n"
    assert stat.S_IMODE(known.stat().st_mode) == 0o600
    hostkeys.rewrite(known, "10.0.0.2", lambda key: True, [OTHER_LINE])
    assert known.read_text().endswith(f"10.0.0.9 {OTHER_LINE}\n10.0.0.2 {OTHER_LINE}\n")
