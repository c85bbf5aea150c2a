"""Problems with an inventory: each one line naming file:line:column, key, what is wrong and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pitunnel import yamlsrc
from pitunnel.yamlsrc import KeyPath, clip


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    column: int | None
    key: str  # dotted key path, "" for the file as a whole
    message: str  # what is wrong
    fix: str  # what would be valid

    def __str__(self) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}" + (f":{self.column}" if self.column is not None else "")
        subject = f"{self.key}: " if self.key else ""
        return f"{where}: {subject}{_sentence(self.message)} Fix: {_sentence(self.fix)}"


def _sentence(text: str) -> str:
    return text if text.endswith((".", "?", "!")) else text + "."


class InventoryError(Exception):
    def __init__(self, file: Path, problems: list[Problem]) -> None:
        super().__init__(file, problems)
        self.file = file
        self.problems = problems

    def __str__(self) -> str:
        n = len(self.problems)
        header = f"{self.file}: {n} problem{'' if n == 1 else 's'} found:"
        return "\n".join([header, *map(str, self.problems)])


class Invalid(Exception):
    """A value check's verdict: what is wrong with the value, and how to fix it (placed by the caller)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message, fix)
        self.message = message
        self.fix = fix


class Problems:
    """The problems found in one parsed file, each placed at the line of the key path it names."""

    def __init__(self, file: Path, doc: yamlsrc.Document) -> None:
        self.file = file
        self.doc = doc
        self.problems: list[Problem] = [
            Problem(file, i.line, i.column, dotted(i.path), i.message, i.fix) for i in doc.issues
        ]

    def problem(self, path: KeyPath, message: str, fix: str, *, at_key: bool = False) -> None:
        """Problems a problem at `path`'s value, or at its key if `at_key`."""
        line, column = (self.doc.locate_key(path) if at_key else self.doc.locate(path)) or (None, None)
        self.problems.append(Problem(self.file, line, column, dotted(path), message, fix))

    def line(self, path: KeyPath) -> str:
        """" (line N)" where `path` is written, to name another place in a message; "" if it is nowhere."""
        position = self.doc.locate(path)
        return f" (line {position[0]})" if position else ""


# ---------------------------------------------------------------------------
# Values in messages: short, whatever the file holds


def show(value: object) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return f"{clip(value)!r} (a string)"
    if isinstance(value, int | float):
        return f"{value} (a number)"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return clip(repr(value))


def dotted(path: KeyPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + clip(part, 40)
    return text
