"""YAML loading that remembers where every key and value came from.

This is mechanism only; it knows nothing about the inventory schema.

`load()` returns a `Document`: the plain Python data (dicts, lists, scalars,
exactly as PyYAML's SafeLoader would build them) plus the 1-based
(line, column) of every mapping key and every value, addressed by key path
such as ``("pis", "pi1", "tunnels", "ssh", "remote_port")``; list items are
addressed by their integer index.

Differences from plain ``yaml.safe_load``:

* Mapping keys are always strings: a key's source text is used as is, so
  ``22:`` is the key ``"22"`` and ``no:`` is ``"no"`` (not ``False``).
* Duplicate keys in one mapping are reported as `Issue`s naming both lines
  (PyYAML silently keeps the last one). The last one is still what is loaded.
* Syntax errors raise `YamlSyntaxError` with line, column and the parser's
  message.
* Hostile input is refused with `YamlRefused` (line, column, message, fix),
  never a traceback: a file over `MAX_BYTES` or not a regular file, nesting
  deeper than `MAX_DEPTH`, more than `MAX_NODES` values (counting every
  expansion of an alias, so a "billion laughs" alias bomb stops early).
* Bytes that are not UTF-8 and control characters become `Issue`s at their
  line and column (naming the key they sit in), and are read as U+FFFD.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import os
import re
import stat

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.error import Mark
from yaml.resolver import Resolver

try:
    from yaml._yaml import CParser  # PyYAML built with libyaml (its wheels and Debian's package are)
except ImportError:  # pragma: no cover
    CParser = None  # type: ignore[assignment,misc]
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Key: TypeAlias = str | int
KeyPath: TypeAlias = tuple[Key, ...]
Position: TypeAlias = tuple[int, int]  # 1-based (line, column)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

MAX_BYTES = 1 << 20  # load_file refuses bigger files: an inventory is a few kilobytes
MAX_DEPTH = 64  # nested collections (an inventory needs 6)
MAX_NODES = 100_000  # values read, counting each expansion of an alias (about 5,000 Pis)
MAX_TEXT_ISSUES = 10  # bad bytes or control characters reported one by one; the rest are counted
_YAML_KEY_LIMIT = 1024  # PyYAML reads at most this many characters as a plain key
_LINE_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # as PyYAML counts lines


@dataclass(frozen=True)
class Issue:
    """A problem with the YAML itself (as opposed to what it means)."""

    path: KeyPath
    line: int
    column: int
    message: str
    fix: str


class YamlError(Exception):
    """The text cannot be read. Line and column are 1-based, or None if unknown."""

    def __init__(self, line: int | None, column: int | None, message: str) -> None:
        super().__init__(line, column, message)
        self.line = line
        self.column = column
        self.message = message

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class YamlSyntaxError(YamlError):
    """The text is not valid YAML."""


class YamlRefused(YamlError):
    """The text is refused before or while reading it: too big, too deep, an alias bomb, not text."""

    def __init__(self, line: int | None, column: int | None, message: str, fix: str) -> None:
        super().__init__(line, column, message)
        self.fix = fix


@dataclass
class Document:
    data: object = None
    keys: dict[KeyPath, Position] = field(default_factory=dict)
    values: dict[KeyPath, Position] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    def locate(self, path: KeyPath) -> Position | None:
        """Where to point a reader for `path`.

        The value's position when the value starts on its key's line
        (``port: yes`` points at ``yes``), else the key's (a block mapping
        points at its ``name:`` line). A path that is not in the document,
        such as a missing required key, falls back to its nearest ancestor.
        """
        while True:
            key, value = self.keys.get(path), self.values.get(path)
            if value is not None and (key is None or key[0] == value[0]):
                return value
            if key is not None:
                return key
            if value is not None:
                return value
            if not path:
                return None
            path = path[:-1]

    def locate_key(self, path: KeyPath) -> Position | None:
        """Where the key of `path` is written (for problems with the key itself), else `locate(path)`."""
        return self.keys.get(path) or self.locate(path)

    def path_at(self, position: Position) -> KeyPath:
        """The key path of the key or value written last at or before `position` (the deepest on a tie)."""
        best: tuple[Position, int, KeyPath] = ((0, 0), -1, ())
        for table in (self.keys, self.values):
            for path, where in table.items():
                candidate = (where, len(path), path)
                if where <= position and candidate[:2] > best[:2]:
                    best = candidate
        return best[2]


def _position(mark: Mark) -> Position:
    return mark.line + 1, mark.column + 1


if TYPE_CHECKING:  # what _Source uses of the parser (libyaml's or PyYAML's own), as mypy can see it
    class _Loading(yaml.SafeLoader):
        pass
else:
    class _Loading(Composer, SafeConstructor, Resolver):
        pass


class _Source(_Loading):
    """What builds a `Document` instead of bare data, over either parser below (PyYAML's own composer and
    constructor: only the scanning and parsing differ)."""

    def load_document(self) -> Document:
        doc = Document()
        self._doc = doc
        self._checked: set[int] = set()  # mapping nodes already checked for duplicates
        self._open: set[int] = set()  # collection nodes being built (alias cycle guard)
        self._flattened: set[int] = set()  # mapping nodes whose merge keys were resolved
        self._depth = 0  # collections being composed around the current node
        self._composed = 0  # nodes composed (each written value once)
        self._built = 0  # values built (an aliased value once per alias)
        node = self.get_single_node()
        if node is not None:
            doc.values[()] = _position(node.start_mark)
            doc.data = self._build(node, ())
        return doc

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        self._composed += 1
        if self._composed > MAX_NODES:
            raise _refused(self.peek_event().start_mark, f"the file holds more than {MAX_NODES} values",
                           "an inventory needs far fewer: check that this is the right file")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _refused(self.peek_event().start_mark, f"collections are nested more than {MAX_DEPTH} deep",
                               "an inventory nests 6 deep: close the brackets or reduce the indentation")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: MappingNode) -> None:
        super().flatten_mapping(node)
        if id(node) not in self._flattened:  # merges copy pairs: count them like values
            self._flattened.add(id(node))
            self._spend(len(node.value), node)

    def _spend(self, count: int, node: Node) -> None:
        self._built += count
        if self._built > MAX_NODES:
            raise _refused(node.start_mark, f"aliases (*name) and merges (<<) expand to more than {MAX_NODES} values "
                           "(an alias bomb?)", "write the values out, or use fewer aliases")

    def _build(self, node: Node, path: KeyPath) -> object:
        self._spend(1, node)
        if len(path) > MAX_DEPTH:  # aliases nest collections deeper than the text does
            raise _refused(node.start_mark, f"aliases nest collections more than {MAX_DEPTH} deep",
                           "write the values out, or use fewer aliases")
        if isinstance(node, ScalarNode):
            try:
                return self.construct_object(node, deep=True)
            except yaml.MarkedYAMLError:
                raise
            except Exception as e:  # a tag its value does not fit: 2024-13-01, !!bool maybe, !!int x
                self._issue(path, node.start_mark, f"cannot read {clip(node.value)!r}: {clip(str(e))}",
                            "quote the value, or remove its !!tag")
                return node.value
        if node.tag not in (_MAP_TAG, _SEQ_TAG):  # e.g. !!set, !!omap, or an unknown tag (raises)
            try:
                return self.construct_object(node, deep=True)
            except yaml.MarkedYAMLError:
                raise
            except Exception as e:
                self._issue(path, node.start_mark, f"cannot read this {node.tag}: {clip(str(e))}",
                            "write a plain mapping or list without a !!tag")
                return None
        if id(node) in self._open:
            self._issue(path, node.start_mark, "an alias refers to the collection that contains it",
                        "remove the recursive alias")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            assert isinstance(node, SequenceNode)
            items: list[object] = []
            for index, item in enumerate(node.value):
                self._doc.values[path + (index,)] = _position(item.start_mark)
                items.append(self._build(item, path + (index,)))
            return items
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, object]:
        if id(node) not in self._checked:  # before merging, so '<<' keys may be overridden
            self._checked.add(id(node))
            self._report_duplicates(node, path)
        self.flatten_mapping(node)  # resolves '<<' merge keys in place
        result: dict[str, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self._issue(path, key_node.start_mark, "a mapping key must be a plain name, not a list or mapping",
                            "write the key as a plain word")
                continue
            key = key_node.value
            sub = path + (key,)
            self._doc.keys[sub] = _position(key_node.start_mark)
            self._doc.values[sub] = _position(value_node.start_mark)
            result[key] = self._build(value_node, sub)
        return result

    def _report_duplicates(self, node: MappingNode, path: KeyPath) -> None:
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            key, line = key_node.value, key_node.start_mark.line + 1
            if key not in first_line:
                first_line[key] = line
                continue
            self._issue(path + (key,), key_node.start_mark,
                        f"duplicate key '{key}' on lines {first_line[key]} and {line}",
                        f"keep only one of them (YAML would silently use line {line} "
                        f"and ignore line {first_line[key]})")

    def _issue(self, path: KeyPath, mark: Mark, message: str, fix: str) -> None:
        line, column = _position(mark)
        self._doc.issues.append(Issue(path, line, column, message, fix))


class SourceLoader(_Source, yaml.SafeLoader):
    """SafeLoader (PyYAML's pure-Python scanner and parser) that builds a `Document`: its error messages are the
    ones pitunnel shows."""


if CParser is not None:
    class FastSourceLoader(_Source, CParser):  # type: ignore[misc]
        """The same over libyaml's parser (about 10 times faster: an inventory of 1,000 Pis parses in a tenth
        of a second, not one). The composer is still PyYAML's, so every limit above holds; its errors' wording
        is libyaml's, so a document it refuses is read again by `SourceLoader` for the message."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


def _refused(mark: Mark, message: str, fix: str) -> YamlRefused:
    line, column = _position(mark)
    return YamlRefused(line, column, message, fix)


def clip(text: str, limit: int = 60) -> str:
    """`text`, or its start and how long it is, so that a hostile value cannot flood the message."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _line_column(text: str, index: int) -> Position:
    """1-based (line, column) of text[index], counting line breaks as PyYAML does."""
    line, start = 1, 0
    for match in _LINE_BREAK.finditer(text, 0, index):
        line, start = line + 1, match.end()
    return line, index - start + 1


def _clean(source: str | bytes) -> tuple[str, list[tuple[int, str]]]:
    """The text with every byte that is not UTF-8 and every control character replaced by U+FFFD,
    and (index in the text, what was there) for each replacement."""
    found: list[tuple[int, str]] = []
    if isinstance(source, bytes):
        parts: list[str] = []
        length, position = 0, 0
        while True:
            try:
                parts.append(source[position:].decode("utf-8"))
                break
            except UnicodeDecodeError as e:
                good = source[position:position + e.start].decode("utf-8")
                parts.append(good + "\ufffd")
                length += len(good)
                found.append((length, f"byte 0x{source[position + e.start]:02x} is not UTF-8 text"))
                length += 1
                position += e.end
        text = "".join(parts)
    else:
        text = source
    control = yaml.reader.Reader.NON_PRINTABLE
    bad = [(m.start(), f"control character U+{ord(m.group()):04X} is not allowed") for m in control.finditer(text)]
    if bad:
        text = control.sub("\ufffd", text)
        found = sorted(found + bad)
    return text, found


def _long_key(text: str, mark: Mark | None) -> YamlRefused | None:
    """A clear error if the line of `mark` holds a key longer than PyYAML reads (it says "could not find ':'")."""
    if mark is None:
        return None
    lines = _LINE_BREAK.split(text)
    line = lines[mark.line] if mark.line < len(lines) else ""
    key = re.match(r"\s*(?:- )*\s*(\S[^:]*)", line)
    if key is None or len(key.group(1)) <= _YAML_KEY_LIMIT:
        return None
    return YamlRefused(mark.line + 1, key.start(1) + 1,
                       f"the key {clip(key.group(1), 20)!r} is {len(key.group(1))} characters long; YAML reads "
                       f"at most {_YAML_KEY_LIMIT} characters as a key",
                       "shorten it (pitunnel's keys and names have at most 31 characters)")


def load(source: str | bytes) -> Document:
    """Parse one YAML document. Raises `YamlSyntaxError` or `YamlRefused`."""
    text, bad = _clean(source)
    try:
        doc = _parse(text)
    except YamlSyntaxError:
        if bad:  # the bad bytes are the likelier cause: report the first
            index, what = bad[0]
            raise YamlRefused(*_line_column(text, index), what, _TEXT_FIX) from None
        raise
    issues = []
    for index, what in bad[:MAX_TEXT_ISSUES]:
        line, column = _line_column(text, index)
        issues.append(Issue(doc.path_at((line, column)), line, column, what, _TEXT_FIX))
    if len(bad) > MAX_TEXT_ISSUES:
        line, column = _line_column(text, bad[MAX_TEXT_ISSUES][0])
        issues.append(Issue((), line, column, f"{len(bad) - MAX_TEXT_ISSUES} more bytes or characters like these",
                            _TEXT_FIX))
    doc.issues[:0] = issues
    return doc


_TEXT_FIX = "save the file as UTF-8 text and write the value with printable characters only"


def _parse(text: str) -> Document:
    if CParser is not None:
        fast = FastSourceLoader(text)
        try:
            return fast.load_document()
        except (yaml.YAMLError, RecursionError):  # libyaml's wording: read again below for PyYAML's
            pass
        finally:
            fast.dispose()
    try:
        loader = SourceLoader(text)
        try:
            return loader.load_document()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as e:
        long_key = _long_key(text, e.context_mark or e.problem_mark)
        if long_key is not None:
            raise long_key from None
        message = e.problem or "invalid YAML"
        if "'\\t'" in message:  # PyYAML's words for a tab where YAML allows only spaces
            message = "a tab character: YAML indents (and spaces out) with spaces only, replace the tab with spaces"
        elif e.context:
            where = f" on line {e.context_mark.line + 1}" if e.context_mark is not None else ""
            message = f"{message} ({e.context}{where})"
        mark = e.problem_mark or e.context_mark
        raise YamlSyntaxError(mark.line + 1 if mark else None, mark.column + 1 if mark else None,
                              message) from None
    except yaml.YAMLError as e:  # e.g. ReaderError; _clean should have left none
        raise YamlSyntaxError(None, None, clip(str(e), 200)) from None
    except RecursionError:  # MAX_DEPTH should stop it first
        raise YamlRefused(None, None, "the file nests too deeply to read",
                          "an inventory nests 6 deep: close the brackets or reduce the indentation") from None


def load_file(path: Path, max_bytes: int = MAX_BYTES) -> Document:
    """Parse a YAML file. Raises `OSError`, `YamlSyntaxError` or `YamlRefused`.

    Only a regular file of at most `max_bytes` is read (a FIFO or device is refused, not waited on)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise YamlRefused(None, None, "is not a regular file", "name a YAML file")
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        size = max(info.st_size, len(data))
        raise YamlRefused(None, None, f"the file is {size} bytes; pitunnel reads at most {max_bytes}",
                          "an inventory is a few kilobytes: check that this is the right file")
    return load(data)
