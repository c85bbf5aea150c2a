"""Facts: what a host is like now, read in one round trip for all the operations of a step."""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass

from .remote import Remote


@dataclass(frozen=True)
class Fact:
    """A read-only shell snippet whose output describes one thing on the host."""

    key: str
    script: str


@dataclass(frozen=True)
class FileState:
    exists: bool
    owner: str = ""
    group: str = ""
    mode: int = 0
    content: bytes = b""
    symlink: str | None = None  # the path is a symbolic link (to this): its target is never read


class Facts(dict[str, tuple[int, str]]):
    """key -> (exit code, output) of each fact's snippet."""

    def output(self, fact: Fact) -> str:
        return self[fact.key][1]

    def file(self, path: str) -> FileState:
        text = self.output(file_fact(path)).strip()
        if text == "ABSENT" or not text:
            return FileState(exists=False)
        if text.startswith("SYMLINK"):
            return FileState(True, symlink=text[len("SYMLINK"):].strip())
        head, _, body = text.partition("\n")
        owner, group, mode = head.split(":")
        return FileState(True, owner, group, int(mode, 8), base64.b64decode(body.strip()))


def file_fact(path: str) -> Fact:
    p = shlex.quote(path)
    # a symbolic link is reported as one, never read through: its target may be any file on the host
    return Fact(f"file:{path}", f"if [ -L {p} ]; then echo \"SYMLINK $(readlink {p})\"; elif [ -f {p} ]; then "
                f"stat -c '%U:%G:%a' {p}; base64 -w0 {p}; echo; else echo ABSENT; fi")


def command_fact(key: str, script: str) -> Fact:
    return Fact(key, script)


def gather(remote: Remote, facts: list[Fact]) -> Facts:
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
