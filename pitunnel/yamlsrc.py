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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

import yaml
from yaml.error import Mark
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Key: TypeAlias = str | int
KeyPath: TypeAlias = tuple[Key, ...]
Position: TypeAlias = tuple[int, int]  # 1-based (line, column)

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class Issue:
    """A problem with the YAML itself (as opposed to what it means)."""

    path: KeyPath
    line: int
    column: int
    message: str
    fix: str


class YamlSyntaxError(Exception):
    """The text is not valid YAML. Line and column are 1-based, or None if unknown."""

    def __init__(self, line: int | None, column: int | None, message: str) -> None:
        super().__init__(line, column, message)
        self.line = line
        self.column = column
        self.message = message

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


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


def _position(mark: Mark) -> Position:
    return mark.line + 1, mark.column + 1


class SourceLoader(yaml.SafeLoader):
    """SafeLoader that builds a `Document` instead of bare data."""

    def load_document(self) -> Document:
        doc = Document()
        self._doc = doc
        self._checked: set[int] = set()  # mapping nodes already checked for duplicates
        self._open: set[int] = set()  # collection nodes being built (alias cycle guard)
        node = self.get_single_node()
        if node is not None:
            doc.values[()] = _position(node.start_mark)
            doc.data = self._build(node, ())
        return doc

    def _build(self, node: Node, path: KeyPath) -> object:
        if isinstance(node, ScalarNode):
            try:
                return self.construct_object(node, deep=True)
            except ValueError as e:  # a scalar that resolves to a timestamp but is not one, e.g. 2024-13-01
                self._issue(path, node.start_mark, f"cannot read {node.value!r}: {e}", "quote the value")
                return node.value
        if node.tag not in (_MAP_TAG, _SEQ_TAG):  # e.g. !!set, !!omap, or an unknown tag (raises)
            return self.construct_object(node, deep=True)
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


def load(source: str | bytes) -> Document:
    """Parse one YAML document. Raises `YamlSyntaxError`."""
    loader = SourceLoader(source)
    try:
        return loader.load_document()
    except yaml.MarkedYAMLError as e:
        message = e.problem or "invalid YAML"
        if e.context:
            where = f" on line {e.context_mark.line + 1}" if e.context_mark is not None else ""
            message = f"{message} ({e.context}{where})"
        mark = e.problem_mark or e.context_mark
        raise YamlSyntaxError(mark.line + 1 if mark else None, mark.column + 1 if mark else None, message) from e
    except yaml.YAMLError as e:  # e.g. ReaderError: bad encoding or control characters
        raise YamlSyntaxError(None, None, str(e)) from e
    finally:
        loader.dispose()


def load_file(path: Path) -> Document:
    """Parse a YAML file. Raises `OSError` or `YamlSyntaxError`."""
    return load(path.read_bytes())
