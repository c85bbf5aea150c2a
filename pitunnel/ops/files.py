"""File operations: a whole file, managed lines in one, an absent path, a directory, a symbolic link, and
a directory pruned of stray files."""

from __future__ import annotations

import base64
import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..facts import Fact, Facts, FileState, file_fact
from .base import Op, Plan
from .shell import backup_commands, directory_commands, q, restore_commands, write_file_commands


@dataclass
class File(Op):
    """A whole file with this content, owner and mode. `validate` runs after install (with the
    file in place); if it fails the old file comes back and the op fails."""

    path: str
    content: str | Callable[[FileState], str]
    owner: str = "root"
    group: str = "root"
    mode: int = 0o644
    validate: str | None = None
    notify: tuple[str, ...] = ()
    secret: bool = False
    title: str = ""
    create: bool = True  # False: a missing file stays missing (an edit of lines in a file that may not exist)

    def __post_init__(self) -> None:
        self.title = self.title or f"file {self.path}"

    def facts(self) -> list[Fact[Any]]:
        return [file_fact(self.path, secret=self.secret)]

    def wanted(self, state: FileState) -> str:
        return self.content(state) if callable(self.content) else self.content

    def plan(self, facts: Facts) -> Plan:
        state = facts.file(self.path)
        if state.symlink is not None:
            why = (f"refusing to write {self.path}: it is a symbolic link (to {state.symlink}), and pitunnel "
                   "replaces only regular files: remove the link and run again")
            return Plan([f"echo {q(why)} >&2", "exit 1"], f"a symbolic link to {state.symlink}: refused")
        if not state.exists and not self.create:
            return Plan([], "absent: nothing to change")
        new = self.wanted(state).encode()
        gaps = []
        if not state.exists:
            gaps.append("create")
        else:
            if state.content != new:
                gaps.append("content")
            if (state.owner, state.group) != (self.owner, self.group):
                gaps.append(f"owner {state.owner}:{state.group} -> {self.owner}:{self.group}")
            if state.mode != self.mode:
                gaps.append(f"mode {state.mode:o} -> {self.mode:o}")
        if not gaps:
            return Plan([], "already as wanted")
        diff = self._diff(state, new) if (not state.exists or state.content != new) else ""
        blob = base64.b64encode(new).decode()
        commands = []
        backups = []
        if self.validate or self.notify:
            commands += backup_commands(self.path)
            backups.append(self.path)
        commands += write_file_commands(self.path, blob, self.owner, self.group, self.mode)
        if self.validate:
            restore = "; ".join(restore_commands(self.path))
            commands.append(f"if ! out=$({self.validate} 2>&1); then {restore}; "
                            f"echo \"validation failed ({self.validate}), old file restored: $out\" >&2; exit 1; fi")
        return Plan(commands, ", ".join(gaps), diff, backups)

    def _diff(self, state: FileState, new: bytes) -> str:
        if self.secret:
            now = f"{len(state.content)} bytes" if state.exists else "absent"
            return f"--- {self.path}\n+++ {self.path}\n(secret: {now} -> {len(new)} bytes, content not shown)\n"
        old = state.content.decode(errors="replace").splitlines(keepends=True) if state.exists else []
        return "".join(difflib.unified_diff(old, new.decode().splitlines(keepends=True),
                                            f"{self.path} (now)" if state.exists else "/dev/null",
                                            f"{self.path} (wanted)"))


def managed_lines(marker_prefix: str, entries: dict[str, str | None]) -> Callable[[FileState], str]:
    """Content function: keep every line not ours; our lines end in "<marker_prefix><name>".
    entries: name -> line (None removes that name's line). Order of others is kept."""

    def render(state: FileState) -> str:
        old = state.content.decode(errors="replace").splitlines() if state.exists else []
        out: list[str] = []
        seen: set[str] = set()
        for line in old:
            ours = _marker_of(line, marker_prefix)
            if ours is None or ours not in entries:
                out.append(line)
                continue
            wanted = entries[ours]
            if wanted is not None and ours not in seen:
                out.append(wanted)
                seen.add(ours)
        for name, wanted in entries.items():
            if wanted is not None and name not in seen:
                out.append(wanted)
        return "\n".join(out) + "\n" if out else ""

    return render


def _marker_of(line: str, prefix: str) -> str | None:
    last = line.rsplit(None, 1)[-1] if line.strip() else ""
    return last[len(prefix):] if last.startswith(prefix) else None


def there(output: str) -> bool:
    return output.strip() == "yes"


def exists_fact(path: str) -> Fact[bool]:
    """Is anything at `path` (a link to nothing too)?"""
    return Fact(f"exists:{path}", f"[ -e {q(path)} ] || [ -L {q(path)} ] && echo yes || echo no", there)


@dataclass
class Absent(Op):
    """No file (or directory tree) at this path."""

    path: str
    notify: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"absent {self.path}"

    @property
    def fact(self) -> Fact[bool]:
        return exists_fact(self.path)

    def facts(self) -> list[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        if not facts.value(self.fact):
            return Plan([], "not there")
        backups = [self.path] if self.notify else []
        pre = backup_commands(self.path) if self.notify else []
        return Plan([*pre, f"rm -rf {q(self.path)}"], "remove", backups=backups)


@dataclass(frozen=True)
class PathStat:
    """What `stat` says of a path: its kind ("directory", "regular file"...), owner, group and mode."""

    kind: str
    owner: str
    group: str
    mode: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.owner}:{self.group}:{self.mode:o}"


def path_stat(output: str) -> PathStat | None:
    """None: nothing there (`stat` said nothing it could read)."""
    fields = output.strip().rsplit(":", 3)
    if len(fields) != 4 or not re.fullmatch("[0-7]+", fields[3]):
        return None
    kind, owner, group, mode = fields
    return PathStat(kind, owner, group, int(mode, 8))


def stat_fact(path: str) -> Fact[PathStat | None]:
    return Fact(f"dir:{path}", f"stat -c '%F:%U:%G:%a' {q(path)} 2>/dev/null || echo ABSENT", path_stat)


@dataclass
class Directory(Op):
    path: str
    owner: str = "root"
    group: str = "root"
    mode: int = 0o755
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"directory {self.path}"

    @property
    def fact(self) -> Fact[PathStat | None]:
        return stat_fact(self.path)

    def facts(self) -> list[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        now = facts.value(self.fact)
        want = PathStat("directory", self.owner, self.group, self.mode)
        if now == want:
            return Plan([], "already as wanted")
        return Plan(directory_commands(self.path, self.owner, self.group, self.mode),
                    "create" if now is None else f"{now} -> {want}")


@dataclass(frozen=True)
class LinkState:
    """Where a link points ("" if the path is no link, None if nothing is there), and whether the target
    wanted is there."""

    points_to: str | None
    target_there: bool


def link_state(output: str) -> LinkState:
    points_to, target = ([*output.split(), "", ""])[:2]
    where = {"ABSENT": None, "NOLINK": ""}.get(points_to, points_to)
    return LinkState(where, target == "target-ok")


def link_fact(path: str, target: str) -> Fact[LinkState]:
    return Fact(f"link:{path}", f"if [ -L {q(path)} ]; then readlink {q(path)}; elif [ -e {q(path)} ]; then "
                f"echo NOLINK; else echo ABSENT; fi; [ -e {q(target)} ] && echo target-ok || echo target-missing",
                link_state)


@dataclass
class Symlink(Op):
    path: str
    target: str
    only_if_exists: bool = True  # skip when the target is gone (e.g. its package was purged)
    notify: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"link {self.path} -> {self.target}"

    @property
    def fact(self) -> Fact[LinkState]:
        return link_fact(self.path, self.target)

    def facts(self) -> list[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        now = facts.value(self.fact)
        if now.points_to == self.target:
            return Plan([], "already linked")
        if now.points_to == "":
            return Plan([], f"{self.path} is not a link: left alone (only a link is replaced)")
        if self.only_if_exists and not now.target_there:
            return Plan([], f"{self.target} is not there")
        backups = [self.path] if self.notify else []
        pre = backup_commands(self.path) if self.notify else []
        return Plan([*pre, f"ln -sfn {q(self.target)} {q(self.path)}"], "link", backups=backups)


def listed(output: str) -> tuple[str, ...]:
    return tuple(output.split())


def matches_fact(directory: str, pattern: str) -> Fact[tuple[str, ...]]:
    """The names in `directory` that match the shell `pattern`."""
    return Fact(f"ls:{directory}/{pattern}", f"cd {q(directory)} 2>/dev/null && for f in {pattern}; do "
                "[ -e \"$f\" ] && echo \"$f\"; done; true", listed)


@dataclass
class Pruned(Op):
    """In `directory`, no file matching `pattern` but those named in `keep`."""

    directory: str
    pattern: str
    keep: frozenset[str]
    notify: tuple[str, ...] = ()
    title: str = ""

    def __post_init__(self) -> None:
        self.title = self.title or f"no stray {self.directory}/{self.pattern}"

    @property
    def fact(self) -> Fact[tuple[str, ...]]:
        return matches_fact(self.directory, self.pattern)

    def facts(self) -> list[Fact[Any]]:
        return [self.fact]

    def plan(self, facts: Facts) -> Plan:
        found = facts.value(self.fact)
        stray = [f for f in found if f not in self.keep]
        if not stray:
            return Plan([], "none")
        paths = [f"{self.directory}/{f}" for f in stray]
        cmds = [c for p in paths for c in backup_commands(p)] if self.notify else []
        return Plan([*cmds, *(f"rm -f {q(p)}" for p in paths)], "remove " + ", ".join(stray),
                    backups=paths if self.notify else [])
