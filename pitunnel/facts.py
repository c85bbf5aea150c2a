"""Facts: what a host is like now, read in one round trip for all the operations of a step."""

from __future__ import annotations

import base64
import io
import shlex
import tarfile
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar, cast

from .remote import HostCannotRun, Remote

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    """A read-only shell snippet whose output describes one thing on the host, and how to read that
    output (pyinfra's `command()` + `process()`): `process` turns it into a typed value, once per reading."""

    key: str
    script: str
    process: Callable[[str], T]
    secret: bool = False  # its output holds a secret file's bytes: -v never shows it (`masked`)


@dataclass(frozen=True)
class FileState:
    exists: bool
    owner: str = ""
    group: str = ""
    mode: int = 0
    content: bytes = b""
    symlink: str | None = None  # the path is a symbolic link (to this): its target is never read


class Facts(dict[str, tuple[int, str]]):
    """key -> (exit code, output) of each fact's snippet; `value` parses an output once, by its fact."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._parsed: dict[str, object] = {}

    def output(self, fact: Fact[Any]) -> str:
        return self[fact.key][1]

    def value(self, fact: Fact[T]) -> T:
        if fact.key not in self._parsed:
            self._parsed[fact.key] = fact.process(self.output(fact))
        return cast(T, self._parsed[fact.key])

    def file(self, path: str) -> FileState:
        return self.value(file_fact(path))


def file_state(output: str) -> FileState:
    text = output.strip()
    if text == "ABSENT" or not text:
        return FileState(exists=False)
    if text.startswith("SYMLINK"):
        return FileState(True, symlink=text[len("SYMLINK"):].strip())
    head, _, body = text.partition("\n")
    owner, group, mode = head.split(":")
    return FileState(True, owner, group, int(mode, 8), base64.b64decode(body.strip()))


def file_fact(path: str, *, secret: bool = False) -> Fact[FileState]:
    p = shlex.quote(path)
    # a symbolic link is reported as one, never read through: its target may be any file on the host
    return Fact(f"file:{path}", f"if [ -L {p} ]; then echo \"SYMLINK $(readlink {p})\"; elif [ -f {p} ]; then "
                f"stat -c '%U:%G:%a' {p}; base64 -w0 {p}; echo; else echo ABSENT; fi", file_state, secret)


# From this many file facts in one gather, those that are not secret are read by one tar of them all rather than by
# a stat and a base64 each (1,000 Pis' Nginx files: 4.5 s of forks on the VPS, issue 27). Fewer are read one by one.
BATCH_FILES_FROM = 64
_BATCH_KEY = "files-in-one-tar"


def _batched(facts: list[Fact[Any]]) -> list[str]:
    """The paths of the file facts `gather` reads in one tar: absolute, not secret, and enough of them."""
    paths = [f.key[len("file:"):] for f in facts if f.process is file_state and not f.secret and f.key.startswith("file:/")]
    return paths if len(paths) >= BATCH_FILES_FROM else []


def _tar_script(paths: list[str]) -> str:
    """Every path in one tar (owner, group, mode and content of a file; a symbolic link as one, never read through),
    gzipped, base64 on one line. A path that is missing is left out of it (tar says so on stderr, dropped)."""
    names = " ".join(shlex.quote(p.lstrip("/")) for p in paths)
    return f"cd / && tar --no-recursion --hard-dereference -cf - -- {names} 2>/dev/null | gzip -1 | base64 -w0; echo"


def _file_outputs(paths: list[str], output: str) -> dict[str, str]:
    """What each path's own file fact would have printed, from the tar `_tar_script` sent."""
    try:
        archive = tarfile.open(fileobj=io.BytesIO(base64.b64decode(output.strip(), validate=True)), mode="r:gz")
        members = {"/" + m.name.lstrip("/"): m for m in archive.getmembers()}
    except (ValueError, tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"the files read in one tar came back unreadable ({e})") from None
    found = {}
    for path in paths:
        m = members.get(path)
        if m is not None and m.issym():
            found[path] = f"SYMLINK {m.linkname}"
        elif m is not None and m.isreg() and (data := archive.extractfile(m)) is not None:
            found[path] = (f"{m.uname or 'UNKNOWN'}:{m.gname or 'UNKNOWN'}:{m.mode & 0o7777:o}\n"
                           + base64.b64encode(data.read()).decode())
        else:  # missing, or not a regular file (a directory): as `[ -f ]` says
            found[path] = "ABSENT"
    return found


def text(output: str) -> str:
    return output


def command_fact(key: str, script: str) -> Fact[str]:
    """A fact whose value is its output as it is."""
    return Fact(key, script, text)


def tcp_listeners(output: str) -> frozenset[str]:
    """The local address:port of each line of `ss -Htln`."""
    return frozenset(line.split()[3] for line in output.splitlines() if len(line.split()) >= 4)


LISTENERS = Fact("ss-listen", "ss -Htln", tcp_listeners)


SECRET_HIDDEN: Final = "(secret: {} bytes of output not shown)"


def masked(secret: Collection[int]) -> Callable[[str], str | None]:
    """What -v shows of a fact read's output (Remote.run's `mask`, a line at a time): each section of the facts
    numbered in `secret` is left out, and its end (`@@RC`) says how much was held back. (A base64 or stat
    line never starts with "@@", so a file's content cannot end its section early.) A secret file's bytes never
    reach the terminal, in any encoding."""
    current: list[int | None] = [None]
    hidden = [0]

    def show(line: str) -> str | None:
        if line.startswith("@@FACT "):
            current[0], hidden[0] = int(line.split()[1]), 0
            return line
        if current[0] not in secret:
            return line
        if line.startswith("@@RC "):
            current[0] = None
            return f"{line} {SECRET_HIDDEN.format(hidden[0])}"
        hidden[0] += len(line) + 1
        return None

    return show


def _hide_all(line: str) -> None:
    return None


def read(remote: Remote, fact: Fact[T]) -> T:
    """One fact on its own, in one round trip (its errors are its output's business, as in `gather`)."""
    return fact.process((remote.run(fact.script, mask=_hide_all) if fact.secret else remote.run(fact.script)).stdout)


def gather(remote: Remote, facts: list[Fact[Any]], *, timeout: float | None = None) -> Facts:
    """Run every fact's snippet in one script; a snippet's failure is data, not an error. `timeout`: for
    snippets that take their time (verify's probes); None: Remote.run's own."""
    unique = list({f.key: f for f in facts}.values())
    if not unique:
        return Facts()
    secret = {f.key for f in facts if f.secret}  # a path read as a secret by one op is secret for all
    batch = _batched([f for f in unique if f.key not in secret])
    if batch:
        inside = {f"file:{p}" for p in batch}
        unique = [f for f in unique if f.key not in inside] + [Fact(_BATCH_KEY, _tar_script(batch), text)]
    parts = []
    for index, fact in enumerate(unique):
        parts.append(f"printf '@@FACT {index}\\n'; ( {fact.script}\n) 2>&1; printf '\\n@@RC {index} %d\\n' $?")
    hidden = [index for index, fact in enumerate(unique) if fact.key in secret]
    script = "\n".join(parts) + "\n"
    waits: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    result = remote.run(script, mask=masked(hidden), **waits) if hidden else remote.run(script, **waits)
    found = Facts()
    current: int | None = None
    lines: list[str] = []
    for line in result.stdout.split("\n"):
        if line.startswith("@@FACT "):
            current, lines = int(line.split()[1]), []
        elif line.startswith("@@RC ") and current is not None:
            found[unique[current].key] = (int(line.split()[2]), "\n".join(lines[:-1] if lines and lines[-1] == "" else lines))
            current = None
        elif current is not None:
            lines.append(line)
    missing = [f.key for f in unique if f.key not in found]
    if missing:
        raise HostCannotRun(remote.name, result.stderr, f"stopped the fact script before {', '.join(missing[:3])}")
    if batch:
        try:
            outputs = _file_outputs(batch, found.pop(_BATCH_KEY)[1])
        except ValueError as e:
            raise HostCannotRun(remote.name, result.stderr, str(e)) from None
        for path, output in outputs.items():
            found[f"file:{path}"] = (0, output)
    return found
