"""Where the YAML reader places what it refuses or flags (line, column, key path), in-process: the hostile-input
tests run the reader in a child process under a stopwatch, so these pin the places and words themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitunnel import yamlsrc


def refusal(text: str) -> yamlsrc.YamlRefused:
    with pytest.raises(yamlsrc.YamlRefused) as exc:
        yamlsrc.load(text)
    return exc.value


def issues(text: str) -> list[tuple[tuple[object, ...], int | None, int | None, str]]:
    return [(i.path, i.line, i.column, i.message) for i in yamlsrc.load(text).issues]


def test_a_key_longer_than_yaml_reads_is_named_where_it_starts() -> None:
    assert yamlsrc.load("k" * 1024 + ": 1\n").data == {"k" * 1024: 1}
    top = refusal("k" * 1025 + ": 1\n")
    assert (top.line, top.column) == (1, 1)
    assert top.message == ("the key 'kkkkkkkkkkkkkkkkkkkk... (1025 characters)' is 1025 characters long; "
                           "YAML reads at most 1024 characters as a key")
    assert top.fix == "shorten it (pitunnel's keys and names have at most 31 characters)"
    nested = refusal("a:\n  - " + "k" * 1100 + ": 1\n")
    assert (nested.line, nested.column) == (2, 5) and "is 1100 characters long" in nested.message


def test_too_deep_brackets_are_refused_at_the_bracket_that_went_too_far() -> None:
    deep = refusal("d: " + "[" * 70 + "]" * 70 + "\n")
    assert (deep.line, deep.column) == (1, 3 + 64)  # the 64th bracket: the top mapping is the first collection
    assert deep.message == "collections are nested more than 64 deep"
    assert deep.fix == "an inventory nests 6 deep: close the brackets or reduce the indentation"


@pytest.mark.parametrize(("text", "where"), [
    ("a: x\x01y\nb: 2\n", (("a",), 1, 5)),  # in an earlier value: not the key written after it
    ("\na: x\x01\n", (("a",), 2, 5)),  # a line break first
    ("vps:\n  main:\n    user: \x01admin\n", (("vps", "main", "user"), 3, 11)),  # the value's first character
    ("a:\n  b: 1\n\x01c: 2\n", (("\ufffdc",), 3, 1)),  # in a key: that key, as read
])
def test_a_control_character_is_placed_at_its_key(text: str, where: tuple[object, ...]) -> None:
    found = issues(text)
    assert [f[:3] for f in found][:1] == [where] and found[0][3] == "control character U+0001 is not allowed"


def test_a_value_its_tag_cannot_read_is_quoted_clipped() -> None:
    (long,) = issues("d: !!int " + "x" * 61 + "\n")
    assert long[:3] == (("d",), 1, 4)
    assert long[3].startswith("cannot read '" + "x" * 60 + "... (61 characters)': invalid literal")
    (exact,) = issues("d: !!int " + "x" * 60 + "\n")
    assert exact[3].startswith("cannot read '" + "x" * 60 + "': ")


def test_a_key_of_exactly_1024_characters_is_not_called_too_long() -> None:
    with pytest.raises(yamlsrc.YamlSyntaxError):
        yamlsrc.load("k" * 1024 + ": [\n")  # the error is the bracket, not the key


def _read_with(kind: type, text: str) -> yamlsrc.Document:
    loader = kind(text)
    try:
        doc: yamlsrc.Document = loader.load_document()
        return doc
    finally:
        loader.dispose()


@pytest.mark.parametrize("text", [
    (Path(__file__).parents[2] / "inventory" / "example.yml").read_text(),
    "base: &b {port: 22, user: pi}\npis:\n  pi1: {<<: *b, port: 2222}\n  pi2: *b\n",
    "a: 1\nb: 2\na: 3\n",  # a duplicate key: an issue, the last value kept
    "text: |\n  two\n  lines\nfolded: >\n  one\n  line\n'quoted key': \"x\\ty\"\nlist:\n- 1\n- [2, {c: d}]\n",
    "name: caf\u00e9 \u2603\r\nnext: 1\r\n",  # non-ASCII and CRLF line ends
    "a: 1\u2028b: 2\n",  # a line break YAML knows beyond \n
    "yes: no\n22: on\nnull: ~\nt: 2026-12-06\nf: 1.5e3\n",  # keys read as their text, values as YAML types
])
def test_libyamls_parser_reads_every_document_as_pyyamls_own(text: str) -> None:
    """The fast reader (libyaml's parser under PyYAML's composer) builds the same data, places and issues."""
    fast, slow = _read_with(yamlsrc.FastSourceLoader, text), _read_with(yamlsrc.SourceLoader, text)
    assert (fast.data, fast.keys, fast.values, fast.issues) == (slow.data, slow.keys, slow.values, slow.issues)
    assert yamlsrc.load(text) == slow


def test_a_syntax_error_keeps_pyyamls_words_and_place() -> None:
    with pytest.raises(yamlsrc.YamlSyntaxError) as exc:
        yamlsrc.load("a: 1\nb: [2\nc: 3\n")
    assert (exc.value.line, exc.value.column) == (3, 2)
    assert exc.value.message == "expected ',' or ']', but got ':' (while parsing a flow sequence on line 2)"
