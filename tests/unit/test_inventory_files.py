"""The laptop files an inventory names, checked directly on real files: who besides the owner can reach a
secret (its mode and every folder above it), the size and text bounds of a password file and an htpasswd file,
and the exact words of each refusal, naming the whole path."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitunnel.inventory import files
from pitunnel.inventory.errors import Invalid


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A folder every user can enter (pytest's own are private to us, which hides every exposure)."""
    folder = Path(tempfile.mkdtemp(dir="/tmp", prefix="pitunnel-files-"))
    folder.chmod(0o755)
    yield folder
    for path in sorted(folder.rglob("*"), reverse=True):
        path.unlink() if not path.is_dir() or path.is_symlink() else path.rmdir()
    folder.rmdir()


def secret(folder: Path, name: str, data: bytes, mode: int = 0o600) -> Path:
    path = folder / name
    path.write_bytes(data)
    path.chmod(mode)
    return path


def refusal(path: Path, kind: str) -> tuple[str, str]:
    with pytest.raises(Invalid) as exc:
        files._check_secret(path, kind)
    return exc.value.message, exc.value.fix


@pytest.mark.parametrize(("file_mode", "folder_mode", "who"), [
    (0o644, 0o755, "other users"),
    (0o604, 0o711, "other users"),
    (0o640, 0o750, "its group"),
    (0o640, 0o710, "its group"),
    (0o644, 0o750, "its group"),  # others cannot enter the folder, its group can
    (0o640, 0o700, None),  # nobody else can enter the folder
    (0o644, 0o700, None),
    (0o600, 0o777, None),
])
def test_who_can_reach_a_secret(open_dir: Path, file_mode: int, folder_mode: int, who: str | None) -> None:
    inner = open_dir / "inner"
    inner.mkdir()
    path = secret(inner, "pw", b"hunter2\n", file_mode)
    inner.chmod(folder_mode)
    try:
        if who is None:
            files._check_secret(path, "password")
        else:
            assert refusal(path, "password") == (f"{path} holds a secret but {who} can read or change it "
                                                 f"(mode {file_mode:04o})", f"chmod 600 {path}")
    finally:
        inner.chmod(0o700)


def test_a_password_file_is_one_line_of_at_most_4096_bytes(tmp_path: Path) -> None:
    files._check_secret(secret(tmp_path, "ok", b"x" * 4095 + b"\n"), "password")
    big = secret(tmp_path, "big", b"x" * 4097)
    assert refusal(big, "password") == (f"{big} is bigger than 4096 bytes", "put only the password in it, on one line")
    empty = secret(tmp_path, "empty", b"\n\n")
    assert refusal(empty, "password") == (f"{empty} is empty", "put the password in it, on one line")
    two = secret(tmp_path, "two", b"a\nb\n")
    assert refusal(two, "password") == (f"{two} holds more than one line (or a carriage return)",
                                        "put only the password in it, on one line with a Unix line ending")
    latin = secret(tmp_path, "latin", b"caf\xe9\n")
    assert refusal(latin, "password") == (f"{latin} is not UTF-8 text (byte 4 is not)",
                                          "save it as UTF-8 text, the password on one line")


def test_an_htpasswd_file_may_be_long_and_many_lines_but_text(tmp_path: Path) -> None:
    files._check_secret(secret(tmp_path, "many", b"alice:x\nbob:y\n" * 1000), "htpasswd")
    files._check_secret(secret(tmp_path, "edge", b"x" * files.MAX_HTPASSWD_BYTES), "htpasswd")
    big = secret(tmp_path, "big", b"x" * (files.MAX_HTPASSWD_BYTES + 1))
    assert refusal(big, "htpasswd") == (f"{big} is bigger than {files.MAX_HTPASSWD_BYTES} bytes", "name an htpasswd file")
    latin = secret(tmp_path, "latin", b"\xff")
    assert refusal(latin, "htpasswd") == (f"{latin} is not UTF-8 text (byte 1 is not)", "save it as UTF-8 text")
    files._check_secret(secret(tmp_path, "key", b"\xff\x00binary"), "key")  # a key's content is paramiko's business


def test_a_path_is_named_whole_in_the_message_up_to_256_characters(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = secret(deep, "pw", b"")
    assert 60 < len(str(path)) <= 256
    assert refusal(path, "password")[0] == f"{path} is empty"
    with pytest.raises(Invalid) as exc:
        files.local_file("no/such/file", deep, exists=True, secret="")
    assert exc.value.message == f"file {deep / 'no/such/file'} does not exist"
    assert exc.value.fix == "create it or correct the path (relative paths start at the inventory's folder)"


def test_paths_are_relative_to_the_inventory_and_expand_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert files.local_file("~/k", Path("/elsewhere"), exists=False, secret="") == tmp_path / "k"
    assert files.local_file("k", tmp_path, exists=False, secret="") == tmp_path / "k"
    assert files.local_file("/abs/k", tmp_path, exists=False, secret="") == Path("/abs/k")
    with pytest.raises(Invalid) as exc:
        files.local_file("~nosuchuser-pitunnel/k", tmp_path, exists=False, secret="")
    assert exc.value.fix == "use an existing home directory or an absolute path"
    with pytest.raises(Invalid) as exc:
        files.local_file("bad\0name", tmp_path, exists=False, secret="password")
    assert exc.value.message.startswith(f"cannot use the path {tmp_path}/bad\0name: ")
    assert files.public_key(Path("/k/id_ed25519")) == Path("/k/id_ed25519.pub")
    assert os.fspath(files.public_key(Path("k"))) == "k.pub"


def test_a_path_the_system_refuses_is_named_with_the_systems_reason(tmp_path: Path) -> None:
    """A NUL byte reaches the system only here (the inventory's text check refuses it first): the reason is the
    error's own words, since a ValueError has no strerror."""
    with pytest.raises(Invalid) as exc:
        files.local_file("/tmp/a\0b", tmp_path, exists=False, secret="key")
    assert (exc.value.message, exc.value.fix) == (
        "cannot use the path /tmp/a\0b: embedded null byte",
        "correct the path (relative paths start at the inventory's folder)")
