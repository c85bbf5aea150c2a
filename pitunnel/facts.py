"""Facts: what a host is like now, read in one round trip for all the operations of a step."""

from __future__ import annotations

import base64
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

from .remote import Remote

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    """A read-only shell snippet whose output describes one thing on the host, and how to read that
    output (pyinfra's `command()` + `process()`): `process` turns it into a typed value, once per reading."""

    key: str
    script: str
    process: Callable[[str], T]


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


def file_fact(path: str) -> Fact[FileState]:
    p = shlex.quote(path)
    # a symbolic link is reported as one, never read through: its target may be any file on the host
    return Fact(f"file:{path}", f"if [ -L {p} ]; then echo \"SYMLINK $(readlink {p})\"; elif [ -f {p} ]; then "
                f"stat -c '%U:%G:%a' {p}; base64 -w0 {p}; echo; else echo ABSENT; fi", file_state)


def text(output: str) -> str:
    return output


def command_fact(key: str, script: str) -> Fact[str]:
    """A fact whose value is its output as it is."""
    return Fact(key, script, text)


def tcp_listeners(output: str) -> frozenset[str]:
    """The local address:port of each line of `ss -Htln`."""
    return frozenset(line.split()[3] for line in output.splitlines() if len(line.split()) >= 4)


LISTENERS = Fact("ss-listen", "ss -Htln", tcp_listeners)


def read(remote: Remote, fact: Fact[T]) -> T:
    """One fact on its own, in one round trip (its errors are its output's business, as in `gather`)."""
    return fact.process(remote.run(fact.script).stdout)


def gather(remote: Remote, facts: list[Fact[Any]]) -> Facts:
    """Run every fact's snippet in one script; a snippet's failure is data, not an error."""
    unique = list({f.key: f for f in facts}.values())
    if not unique:
        return Facts()
    parts = []
    for index, fact in enumerate(unique):
        parts.append(f"printf '@@FACT {index}\\n'; ( {fact.script}\n) 2>&1; printf '\\n@@RC {index} %d\\n' $?")
    result = remote.run("\n".join(parts) + "\n")
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
        raise RuntimeError(f"{remote.name}: facts not read ({', '.join(missing[:3])}): {result.stderr.strip()[-300:]}")
    return found
