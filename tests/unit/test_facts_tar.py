"""The many file facts read in one tar (pitunnel/facts.py `_tar_script`, `_file_outputs`): the names handed to tar
are relative to the root it is run in, a member named with its leading slash is still found, an owner or group
with no name on the host reads as stat says it (UNKNOWN), and only what the script asks the host to send (gzip,
then base64 on one line) is read: anything else is said to be unreadable."""

from __future__ import annotations

import base64
import io
import shlex
import subprocess
import tarfile
from pathlib import Path

import pytest

from pitunnel import facts


def tar_text(members: list[tuple[tarfile.TarInfo, bytes]], *, mode: str = "w:gz") -> str:
    """What the host's script prints: the tar of `members`, gzipped, base64 on one line."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as archive:  # type: ignore[call-overload]
        for info, data in members:
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return base64.b64encode(buffer.getvalue()).decode() + "\n"


def member(name: str, *, uname: str = "root", gname: str = "root", mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.uname, info.gname, info.mode, info.uid, info.gid = uname, gname, mode, 4242, 4343
    return info


def test_the_tar_is_given_each_path_relative_to_the_root_it_reads_from(tmp_path: Path) -> None:
    """The script changes to / and names each path without its leading slash (a name starting with X too): run
    here with a test directory as its root, it reads that directory's files, never the machine's own."""
    root = tmp_path / "root"
    (root / "X11").mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "X11" / "xorg.conf").write_bytes(b"Section \"Device\"\n")
    (root / "etc" / "site a.conf").write_bytes(b"server a;\n")
    paths = ["/X11/xorg.conf", "/etc/site a.conf", "/etc/missing"]
    script = facts._tar_script(paths)
    assert script.startswith("cd / && ")
    here = script.replace("cd / && ", f"cd {shlex.quote(str(root))} && ", 1)
    output = subprocess.run(["sh", "-c", here], capture_output=True, text=True, check=True).stdout
    found = {path: facts.file_state(text) for path, text in facts._file_outputs(paths, output).items()}
    assert found["/X11/xorg.conf"].content == b"Section \"Device\"\n"
    assert found["/etc/site a.conf"].content == b"server a;\n"
    assert found["/etc/missing"] == facts.FileState(exists=False)


def test_a_member_named_with_its_leading_slash_or_a_name_starting_with_x_is_found() -> None:
    """Some tars keep the leading slash of a name (tar -P, other implementations): the file is the same file."""
    output = tar_text([(member("/abs/kept.conf"), b"kept\n"), (member("Xdir/conf"), b"x\n"),
                       (member("etc/plain", gname="adm", mode=0o640), b"plain\n")])
    found = facts._file_outputs(["/abs/kept.conf", "/Xdir/conf", "/etc/plain", "/etc/other"], output)
    assert found == {"/abs/kept.conf": "root:root:644\n" + base64.b64encode(b"kept\n").decode(),
                     "/Xdir/conf": "root:root:644\n" + base64.b64encode(b"x\n").decode(),
                     "/etc/plain": "root:adm:640\n" + base64.b64encode(b"plain\n").decode(),
                     "/etc/other": "ABSENT"}


def test_an_owner_or_group_with_no_name_on_the_host_reads_as_stat_says_it() -> None:
    """`stat -c %U:%G` prints UNKNOWN for a user or group the host has no name for; the tar, its bare number
    and no name: read the same way, so the one-by-one read and the tar agree."""
    output = tar_text([(member("etc/orphan", uname="", gname="", mode=0o600), b"o\n"),
                       (member("etc/half", uname="www-data", gname=""), b"h\n"),
                       (member("etc/other-half", uname="", gname="www-data"), b"g\n")])
    found = facts._file_outputs(["/etc/orphan", "/etc/half", "/etc/other-half"], output)
    assert [text.split("\n")[0] for text in found.values()] == ["UNKNOWN:UNKNOWN:600", "www-data:UNKNOWN:644",
                                                                "UNKNOWN:www-data:644"]
    assert facts.file_state(found["/etc/orphan"]) == facts.FileState(True, "UNKNOWN", "UNKNOWN", 0o600, b"o\n")


@pytest.mark.parametrize("how", ["stray characters in the base64", "not gzipped"])
def test_only_the_gzipped_base64_line_the_script_asks_for_is_read(how: str) -> None:
    """Output that is not what `gzip -1 | base64 -w0` writes is not what the host was asked to send (something
    else wrote to it): it is said to be unreadable, never decoded around."""
    good = tar_text([(member("etc/a"), b"a\n")])
    assert facts._file_outputs(["/etc/a"], good)["/etc/a"].startswith("root:root:644\n")
    output = {"stray characters in the base64": good[:8] + "!*" + good[8:],
              "not gzipped": tar_text([(member("etc/a"), b"a\n")], mode="w")}[how]
    with pytest.raises(ValueError, match="the files read in one tar came back unreadable"):
        facts._file_outputs(["/etc/a"], output)
