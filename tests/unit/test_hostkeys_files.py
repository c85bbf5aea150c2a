"""pitunnel/hostkeys.py's reading and rewriting of known_hosts, as OpenSSH reads it: the name patterns of a
`@revoked` line (`*`, `?`, `!`, hashed names), the lines that name a host, and a rewrite that touches only the
lines of the host named (its mode kept)."""

from __future__ import annotations

import os
from pathlib import Path

import paramiko
import pytest

from pitunnel import hostkeys



@pytest.fixture(scope="module")
def key() -> paramiko.PKey:
    return paramiko.ECDSAKey.generate()


@pytest.mark.parametrize("field, name, matches", [
    ("pi1.example", "pi1.example", True),
    ("PI1.Example", "pi1.example", True),  # names compare without case, as OpenSSH's
    ("pi1.example", "pi10.example", False),
    ("pi?.example", "pi1.example", True),
    ("pi?.example", "pi10.example", False),  # ? is one character
    ("*.example", "pi1.example", True),
    ("*.example", "pi1.example.org", False),  # the whole name, not a part of it
    ("pi.example.", "piXexampleX", False),  # a dot is a dot, not any character
    ("other,*.example", "pi1.example", True),  # any pattern of the list
    ("*.example,!pi1.example", "pi1.example", False),  # a negated match wins, whatever its place
    ("!pi1.example,*.example", "pi1.example", False),
    ("!pi1.example,*.example", "pi2.example", True),
    ("!pi1.example", "pi2.example", False),  # a negation alone names no host
    ("[127.0.0.1]:2222", "[127.0.0.1]:2222", True),  # brackets are plain characters
    ("[127.0.0.1]:2222", "[127.0.0.1]:22", False),
])
def test_revoked_line_patterns_as_openssh_reads_them(tmp_path: Path, key: paramiko.PKey, field: str, name: str,
                                                     matches: bool) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"# a comment\nother.example {key.get_name()} {key.get_base64()}\n"
                     f"@revoked {field} {key.get_name()} {key.get_base64()}\n")
    assert hostkeys.revoked_at(known, name, key) == (3 if matches else None)


def test_a_hashed_name_matches_only_its_host(tmp_path: Path, key: paramiko.PKey) -> None:
    hashed = paramiko.HostKeys.hash_host("pi1.example")
    known = tmp_path / "known_hosts"
    known.write_text(f"@revoked {hashed} {key.get_name()} {key.get_base64()}\n{hashed} {key.get_name()} {key.get_base64()}\n")
    assert hostkeys.revoked_at(known, "pi1.example", key) == 1
    assert hostkeys.revoked_at(known, "pi2.example", key) is None
    assert hostkeys.known_lines(known, "pi1.example") == [f"{hashed} {key.get_name()} {key.get_base64()}"]
    assert hostkeys.known_lines(known, "pi2.example") == []


def test_another_key_or_a_plain_line_is_no_revocation(tmp_path: Path, key: paramiko.PKey) -> None:
    other = paramiko.ECDSAKey.generate()
    known = tmp_path / "known_hosts"
    known.write_text(f"@revoked pi1 {other.get_name()} {other.get_base64()}\npi1 {key.get_name()} {key.get_base64()}\n"
                     "@revoked pi1\n")
    assert hostkeys.revoked_at(known, "pi1", key) is None
    assert hostkeys.revoked_at(tmp_path / "none", "pi1", key) is None


def test_known_lines_are_the_plain_lines_naming_the_host(tmp_path: Path, key: paramiko.PKey) -> None:
    known = tmp_path / "known_hosts"
    line = f"pi1,10.0.0.1 {key.get_name()} {key.get_base64()}"
    known.write_text(f"{line}\n# pi1 {key.get_name()} x\n@cert-authority pi1 {key.get_name()} {key.get_base64()}\n"
                     f"pi1 short\npi10 {key.get_name()} {key.get_base64()}\n")
    assert hostkeys.known_lines(known, "pi1") == [line]
    assert hostkeys.known_lines(known, "10.0.0.1") == [line]
    assert hostkeys.known_lines(tmp_path / "none", "pi1") == []
    assert hostkeys.listed(known, "pi1", key) and not hostkeys.listed(known, "pi1", paramiko.ECDSAKey.generate())
    assert not hostkeys.listed(known, "pi2", key)
    known.write_text(f"pi2 {key.get_name()} {key.get_base64()} a comment after the key\n")
    assert hostkeys.listed(known, "pi2", key)


def test_rewrite_touches_only_the_hosts_lines_and_keeps_the_files_mode(tmp_path: Path, key: paramiko.PKey) -> None:
    old, new = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate(bits=384)
    mine, theirs = f"{old.get_name()} {old.get_base64()}", f"{key.get_name()} {key.get_base64()}"
    known = tmp_path / "known_hosts"
    known.write_text(f"# mine\nother {theirs}\npi1 {mine}\npi1 {theirs}\n")
    os.chmod(known, 0o640)
    fresh = f"{new.get_name()} {new.get_base64()}"
    hostkeys.rewrite(known, "pi1", keep=lambda k: k == theirs, add=[fresh, theirs])
    assert known.read_text() == f"# mine\nother {theirs}\npi1 {theirs}\npi1 {fresh}\n"  # theirs kept, not added twice
    assert known.stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / "known_hosts.pitunnel-tmp").exists()
    hostkeys.rewrite(known, "pi1", keep=lambda _: False, add=[])
    assert known.read_text() == f"# mine\nother {theirs}\n"


def test_rewrite_makes_the_file_and_its_folder(tmp_path: Path, key: paramiko.PKey) -> None:
    known = tmp_path / "ssh" / "known_hosts"
    hostkeys.rewrite(known, "[vps]:22", keep=lambda _: True, add=[f"{key.get_name()} {key.get_base64()}"])
    assert known.read_text() == f"[vps]:22 {key.get_name()} {key.get_base64()}\n"


def test_asking_a_port_that_never_speaks_ssh_for_its_keys_gives_up_after_the_timeout_per_key_type() -> None:
    import socket
    import time

    with socket.socket() as silent:  # accepts (the kernel does), never sends a banner
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        started = time.monotonic()
        assert hostkeys.offered("127.0.0.1", silent.getsockname()[1], "SHA256:x", timeout=0.3) is None
        took = time.monotonic() - started
    assert 0.3 * len(hostkeys.KEY_TYPES) <= took < 10  # each key type waited 0.3 s; paramiko's own wait is 15 s each


def test_load_known_takes_every_plain_line_around_what_it_cannot_read(tmp_path: Path, key: paramiko.PKey) -> None:
    other = paramiko.ECDSAKey.generate()
    known = tmp_path / "known_hosts"
    known.write_bytes(
        b"# caf\xe9: a comment in latin-1\n\n   \n"
        + f"@revoked pi1 {other.get_name()} {other.get_base64()}\n".encode()
        + f"@cert-authority *.lan {other.get_name()} {other.get_base64()}\n".encode()
        + b"pi1 ssh-ed25519 not-base64!!\n"  # paramiko cannot read it: skipped, the lines after it still taken
        + f"  pi1 {key.get_name()} {key.get_base64()}\n".encode()
        + f"[vps]:2222 {other.get_name()} {other.get_base64()}\n".encode())
    keys = paramiko.HostKeys()
    hostkeys.load_known(keys, known)
    assert keys.lookup("pi1") is not None and keys.lookup("pi1")[key.get_name()] == key
    assert keys.lookup("[vps]:2222")[other.get_name()] == other
    assert len(keys.keys()) == 2  # the marked lines are no host's key


def test_a_pattern_list_that_does_not_name_the_host_says_no(key: paramiko.PKey) -> None:
    assert hostkeys._pattern_matches("pi1.example", "other.example,pi2.*") is False
    assert hostkeys._pattern_matches("pi1.example", "other.example,pi1.*") is True


def test_a_commented_out_line_or_a_line_with_an_unknown_marker_is_no_known_key(tmp_path: Path,
                                                                               key: paramiko.PKey) -> None:
    """`#` starts a comment whatever follows it (a line commented out that listed the host among others), and a
    line with a marker OpenSSH does not know is skipped: neither lists a key for the host."""
    known = tmp_path / "known_hosts"
    known.write_text(f"#old,pi1 {key.get_name()} {key.get_base64()}\n@bogus,pi1 {key.get_name()} {key.get_base64()}\n")
    assert hostkeys.known_lines(known, "pi1") == [] and not hostkeys.listed(known, "pi1", key)
    fresh = paramiko.ECDSAKey.generate()
    hostkeys.rewrite(known, "pi1", keep=lambda _: False, add=[f"{fresh.get_name()} {fresh.get_base64()}"])
    assert known.read_text() == (f"#old,pi1 {key.get_name()} {key.get_base64()}\n@bogus,pi1 {key.get_name()} "
                                 f"{key.get_base64()}\npi1 {fresh.get_name()} {fresh.get_base64()}\n")  # left as they were


def test_a_temp_file_left_by_an_interrupted_rewrite_is_taken_over_not_left_beside_known_hosts(
        tmp_path: Path, key: paramiko.PKey) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"pi1 {key.get_name()} {key.get_base64()}\n")
    (tmp_path / "known_hosts.pitunnel-tmp").write_text("half a file from a run stopped mid-rewrite\n")
    hostkeys.rewrite(known, "pi2", keep=lambda _: True, add=[f"{key.get_name()} {key.get_base64()}"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["known_hosts"]
    assert known.read_text() == f"pi1 {key.get_name()} {key.get_base64()}\npi2 {key.get_name()} {key.get_base64()}\n"


def test_asking_a_host_for_its_keys_waits_at_most_the_timeout_given_to_connect_and_to_exchange_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that takes the connection slowly, or never finishes the key exchange, must not hold the run: both
    the TCP connection and the key exchange of every key type are bounded by the timeout given."""
    import socket

    from tests.unit.sshd_fake import FakeSshd

    host_key = paramiko.ECDSAKey.generate(bits=384)
    sshd = FakeSshd(paramiko.ECDSAKey.generate())
    sshd.other_host_keys = [host_key]
    connects: list[object] = []
    exchanges: list[object] = []
    real_connect, real_start = socket.create_connection, paramiko.Transport.start_client

    def connect(address: tuple[str, int], *args: object, **kwargs: object) -> socket.socket:
        connects.append(kwargs.get("timeout", args[0] if args else "none given"))
        return real_connect(address, *args, **kwargs)  # type: ignore[arg-type]

    def start(self: paramiko.Transport, event: object = None, timeout: float | None = None) -> None:
        exchanges.append(timeout)
        real_start(self, event, timeout)  # type: ignore[arg-type]

    monkeypatch.setattr(hostkeys.socket, "create_connection", connect)
    monkeypatch.setattr(paramiko.Transport, "start_client", start)
    try:
        found = hostkeys.offered("127.0.0.1", sshd.port, hostkeys.fingerprint(host_key), 2.5)
    finally:
        sshd.close()
    assert found == host_key
    assert connects == exchanges == [2.5] * (hostkeys.KEY_TYPES.index("ecdsa-sha2-nistp384") + 1)


def test_load_known_takes_no_key_from_a_commented_out_or_marked_line_that_lists_the_host(
        tmp_path: Path, key: paramiko.PKey) -> None:
    """A line commented out with `#` (at the start or after indenting) or starting with `@` gives no host a
    key, even when its first word lists the host among other names: the key such a line names is not trusted,
    while a plain line after them still is."""
    other = paramiko.ECDSAKey.generate()
    known = tmp_path / "known_hosts"
    known.write_text(f"#old.example,pi1 {key.get_name()} {key.get_base64()}\n"
                     f"   #old.example,pi2 {key.get_name()} {key.get_base64()}\n"
                     f"@bogus,pi3 {key.get_name()} {key.get_base64()}\n"
                     f"pi4 {other.get_name()} {other.get_base64()}\n")
    keys = paramiko.HostKeys()
    hostkeys.load_known(keys, known)
    assert [keys.lookup(name) for name in ("pi1", "pi2", "pi3")] == [None, None, None]
    assert keys.lookup("pi4")[other.get_name()] == other  # type: ignore[index]
    assert len(keys.keys()) == 1


def test_a_revoked_line_with_a_comment_after_the_key_still_revokes_it_in_a_file_not_utf8(
        tmp_path: Path, key: paramiko.PKey) -> None:
    """OpenSSH allows a comment after the key of a `@revoked` line, and a known_hosts in latin-1 (a comment
    written on an old system): the key is revoked all the same, at the line that says so."""
    known = tmp_path / "known_hosts"
    known.write_bytes(b"# caf\xe9: a comment in latin-1\n"
                      + f"@revoked pi1 {key.get_name()} {key.get_base64()} retired 2024, stolen laptop\n".encode())
    assert hostkeys.revoked_at(known, "pi1", key) == 2
    with pytest.raises(hostkeys.HostKeyRefused, match=f"REVOKED: .* is marked @revoked in {known}:2"):
        hostkeys.refuse_revoked(known, "pi1", key)
    assert hostkeys.revoked_at(known, "pi2", key) is None


def test_a_known_hosts_not_utf8_is_read_and_rewritten_byte_for_byte(tmp_path: Path, key: paramiko.PKey) -> None:
    """A latin-1 comment in known_hosts (a user's own line) neither stops the lookup a changed key makes (it raised
    UnicodeDecodeError: an internal error instead of the host-key message) nor changes when pitunnel rewrites it."""
    mine = f"{key.get_name()} {key.get_base64()}"
    known = tmp_path / "known_hosts"
    known.write_bytes(b"# Ger\xe4t im Keller\npi1 " + mine.encode() + b" caf\xe9\n")
    assert hostkeys.listed(known, "pi1", key) and len(hostkeys.known_lines(known, "pi1")) == 1
    other = paramiko.ECDSAKey.generate()
    hostkeys.rewrite(known, "pi2", keep=lambda _: True, add=[f"{other.get_name()} {other.get_base64()}"])
    assert known.read_bytes() == (b"# Ger\xe4t im Keller\npi1 " + mine.encode() + b" caf\xe9\npi2 "
                                  + f"{other.get_name()} {other.get_base64()}".encode() + b"\n")
