"""The YAML reader's limits counted exactly (values written, values built through aliases and merges, nesting in
the text and through aliases), with the limits made small so that each boundary is one value away; and what it
reads, flags and places for tags, aliases, keys and duplicates, in-process (test_inventory_hostile.py runs the
big hostile files in a child process under a stopwatch)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from pitunnel import yamlsrc


def refusal(text: str) -> yamlsrc.YamlRefused:
    with pytest.raises(yamlsrc.YamlRefused) as exc:
        yamlsrc.load(text)
    return exc.value


def place(error: yamlsrc.YamlRefused) -> tuple[int | None, int | None, str, str]:
    return error.line, error.column, error.message, error.fix


ALIASES = "a: &x [1, 2]\nb: *x\nc: *x\n"  # 9 values written (3 keys, 2 aliases); 13 built (3 pairs, 3 lists of 2)


def test_the_values_written_are_counted_one_by_one_and_the_first_too_many_is_named(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 6)  # the mapping, the key, the list and its three items
    assert yamlsrc.load("a: [1, 2, 3]\n").data == {"a": [1, 2, 3]}
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 5)
    assert place(refusal("a: [1, 2, 3]\n")) == (1, 11, "the file holds more than 5 values",
                                                 "an inventory needs far fewer: check that this is the right file")


def test_an_alias_is_one_value_written_and_its_whole_collection_built_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 13)
    assert yamlsrc.load(ALIASES).data == {"a": [1, 2], "b": [1, 2], "c": [1, 2]}
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 12)  # the 13th value built is the last 2, built for c
    assert place(refusal(ALIASES)) == (1, 11, "aliases (*name) and merges (<<) expand to more than 12 values "
                                              "(an alias bomb?)", "write the values out, or use fewer aliases")
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 8)  # the 9th value written is the second alias
    assert place(refusal(ALIASES))[:3] == (3, 4, "the file holds more than 8 values")


def test_an_aliased_mappings_pairs_count_once_and_a_merges_pairs_each_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # built: the root (1) and its 3 pairs; the mapping (1), its pair (once) and its value (1); twice more the
    # mapping and its value through the aliases: 11
    aliased = "a: &m {k: 1}\nb: *m\nc: *m\n"
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 11)
    assert yamlsrc.load(aliased).data == {"a": {"k": 1}, "b": {"k": 1}, "c": {"k": 1}}
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 10)  # the 11th is the value 1, built for c
    assert place(refusal(aliased))[:2] == (1, 11)
    # each merge copies the 3 pairs into a mapping of its own: 1 + 4, then 1 + 3 + 3 four times = 33
    merged = "a: &m {k: 1, l: 2, m: 3}\nb: {<<: *m}\nc: {<<: *m}\nd: {<<: *m}\n"
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 33)
    assert yamlsrc.load(merged).data == {key: {"k": 1, "l": 2, "m": 3} for key in "abcd"}
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 32)
    assert place(refusal(merged))[:2] == (1, 23)  # d's last value, where it is written
    monkeypatch.setattr(yamlsrc, "MAX_NODES", 21)  # c's copied pairs go past it: c's mapping is named
    assert place(refusal(merged)) == (3, 4, "aliases (*name) and merges (<<) expand to more than 21 values "
                                            "(an alias bomb?)", "write the values out, or use fewer aliases")


def test_collections_nest_as_deep_as_the_limit_and_no_deeper(monkeypatch: pytest.MonkeyPatch) -> None:
    assert yamlsrc.load("d: " + "[" * 63 + "]" * 63 + "\n").data is not None  # 64 with the top mapping
    monkeypatch.setattr(yamlsrc, "MAX_DEPTH", 4)
    # the siblings before the deep value close again: only what is open around a value counts
    assert yamlsrc.load("a:\n  b: 1\n  c: [[]]\n").data == {"a": {"b": 1, "c": [[]]}}
    assert place(refusal("a:\n  b: 1\n  c: [[[]]]\n")) == (
        3, 8, "collections are nested more than 4 deep",
        "an inventory nests 6 deep: close the brackets or reduce the indentation")


def test_aliases_nest_as_deep_as_the_limit_and_no_deeper(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsrc, "MAX_DEPTH", 4)
    nested = "a: &a [1]\nb: &b [*a]\nc: &c [*b]\n"  # c's 1 sits 4 deep: c, its list, b's list, a's list
    assert yamlsrc.load(nested).data == {"a": [1], "b": [[1]], "c": [[[1]]]}
    too_deep = refusal(nested + "d: [*c]\n")
    assert place(too_deep) == (1, 8, "aliases nest collections more than 4 deep",  # the 1, where it is written
                               "write the values out, or use fewer aliases")


def test_an_aliased_collection_is_read_whole_wherever_it_is_used_and_only_a_cycle_is_flagged() -> None:
    doc = yamlsrc.load("a: &x [1, 2]\nb: *x\nc: [*x, *x]\n")
    assert doc.data == {"a": [1, 2], "b": [1, 2], "c": [[1, 2], [1, 2]]} and doc.issues == []
    cycle = yamlsrc.load("a: &x [1, *x]\nb: 2\n")
    assert cycle.data == {"a": [1, None], "b": 2}
    assert [(i.path, i.line, i.column, i.message, i.fix) for i in cycle.issues] == [
        (("a", 1), 1, 4, "an alias refers to the collection that contains it", "remove the recursive alias")]


def test_a_set_or_an_ordered_map_is_read_whole() -> None:
    doc = yamlsrc.load("s: !!set {a, b}\no: !!omap [x: 1, y: 2]\n")
    assert doc.data == {"s": {"a", "b"}, "o": [("x", 1), ("y", 2)]} and doc.issues == []


@pytest.mark.parametrize(("text", "path", "line", "column", "message", "fix"), [
    ("a: !!int x\n", ("a",), 1, 4, "cannot read 'x': invalid literal for int() with base 10: 'x'",
     "quote the value, or remove its !!tag"),
    ("a:\n  d: 2024-13-01\n", ("a", "d"), 2, 6, "cannot read '2024-13-01': month must be in 1..12",
     "quote the value, or remove its !!tag"),
    ("s: !!set {2024-13-01}\n", ("s",), 1, 4, "cannot read this tag:yaml.org,2002:set: month must be in 1..12",
     "write a plain mapping or list without a !!tag"),
])
def test_a_value_its_tag_cannot_read_is_one_issue_at_the_value(text: str, path: tuple[str, ...], line: int,
                                                               column: int, message: str, fix: str) -> None:
    doc = yamlsrc.load(text)
    assert [(i.path, i.line, i.column, i.message, i.fix) for i in doc.issues] == [(path, line, column, message, fix)]


def test_a_tagged_value_that_cannot_be_read_is_kept_as_written_or_left_out() -> None:
    assert yamlsrc.load("a: !!int x\nb: 2\n").data == {"a": "x", "b": 2}
    assert yamlsrc.load("s: !!set {2024-13-01}\nb: 2\n").data == {"s": None, "b": 2}


def test_a_key_that_is_a_list_is_flagged_and_the_keys_after_it_are_read() -> None:
    doc = yamlsrc.load("top:\n  ? [a]\n  : 1\n  b: 2\n")
    assert doc.data == {"top": {"b": 2}}
    assert [(i.path, i.line, i.column, i.message, i.fix) for i in doc.issues] == [
        (("top",), 2, 5, "a mapping key must be a plain name, not a list or mapping", "write the key as a plain word")]
    assert (doc.keys[("top", "b")], doc.values[("top", "b")]) == ((4, 3), (4, 6))


def test_duplicate_keys_name_both_lines_and_merge_keys_are_not_duplicates() -> None:
    doc = yamlsrc.load("base: &b {x: 1}\nmore: &m {y: 2}\nall:\n  <<: *b\n  <<: *m\n  ? [k]\n  : 0\n"
                       "  z: 3\n  z: 4\n")
    assert doc.data == {"base": {"x": 1}, "more": {"y": 2}, "all": {"x": 1, "y": 2, "z": 4}}
    assert [(i.path, i.line, i.column, i.message, i.fix) for i in doc.issues] == [
        (("all", "z"), 9, 3, "duplicate key 'z' on lines 8 and 9",
         "keep only one of them (YAML would silently use line 9 and ignore line 8)"),
        (("all",), 6, 5, "a mapping key must be a plain name, not a list or mapping", "write the key as a plain word")]


def test_places_of_keys_list_items_and_the_document_itself() -> None:
    doc = yamlsrc.load("# a comment\n\nlist:\n  - one\n  - {two: 2}\n")
    assert doc.values[()] == (3, 1)
    assert doc.values[("list", 0)] == (4, 5) and doc.values[("list", 1)] == (5, 5)
    assert doc.keys[("list", 1, "two")] == (5, 6) and doc.values[("list", 1, "two")] == (5, 11)
    assert doc.locate(("missing",)) == (3, 1)  # a key that is not there: the document's start
    assert doc.locate(("list", 7)) == (3, 1)  # the list's key line: its items start on the lines below
    assert doc.locate_key(("list", 1, "two")) == (5, 6)


def test_a_bad_character_in_an_aliased_value_is_placed_at_the_key_it_is_written_under() -> None:
    doc = yamlsrc.load("a: &x v\x01\nb: *x\n")
    assert [(i.path, i.line, i.column) for i in doc.issues] == [(("a",), 1, 8)]
    assert doc.data == {"a": "v\ufffd", "b": "v\ufffd"}


def test_a_syntax_error_keeps_its_place_and_words_through_a_pickle() -> None:
    with pytest.raises(yamlsrc.YamlSyntaxError) as exc:
        yamlsrc.load("a: [1\nb: 2\n")
    again = pickle.loads(pickle.dumps(exc.value))
    assert (again.line, again.column, again.message, str(again)) == (
        exc.value.line, exc.value.column, exc.value.message, str(exc.value))
    assert again.args == (2, 2, exc.value.message)


# ------------------------------------------------------------------------------------------ bytes and characters


def found(source: str | bytes) -> list[tuple[tuple[object, ...], int, int, str]]:
    return [(i.path, i.line, i.column, i.message) for i in yamlsrc.load(source).issues]


def test_each_byte_that_is_not_utf8_is_named_at_its_character_and_read_as_a_replacement() -> None:
    doc = yamlsrc.load(b"a: x\xffy\nb: \xc3\xa9\xfe\nc: \xe2\x82z\n")  # \xe2\x82: one broken character, z after
    assert doc.data == {"a": "x\ufffdy", "b": "\u00e9\ufffd", "c": "\ufffdz"}
    assert [(i.path, i.line, i.column, i.message, i.fix) for i in doc.issues] == [
        (("a",), 1, 5, "byte 0xff is not UTF-8 text", yamlsrc._TEXT_FIX),
        (("b",), 2, 5, "byte 0xfe is not UTF-8 text", yamlsrc._TEXT_FIX),  # after the two bytes of one é
        (("c",), 3, 4, "byte 0xe2 is not UTF-8 text", yamlsrc._TEXT_FIX)]
    assert yamlsrc._TEXT_FIX == "save the file as UTF-8 text and write the value with printable characters only"


def test_bad_bytes_and_control_characters_are_named_in_the_order_they_are_written() -> None:
    assert found(b"a: \x01\xff\x7f\n") == [
        (("a",), 1, 4, "control character U+0001 is not allowed"), (("a",), 1, 5, "byte 0xff is not UTF-8 text"),
        (("a",), 1, 6, "control character U+007F is not allowed")]
    assert found("a: \u00e9\x01\n") == [(("a",), 1, 5, "control character U+0001 is not allowed")]


def test_ten_bad_characters_are_named_one_by_one_and_the_rest_summed_up_at_the_first_of_them() -> None:
    ten = "a: " + "\x01" * 10 + "\n"
    assert len(found(ten)) == 10 and found(ten)[-1] == (("a",), 1, 13, "control character U+0001 is not allowed")
    twelve = found(ten + "b: x\x02\x03\n")
    assert len(twelve) == 11 and twelve[:10] == found(ten)
    assert twelve[10] == ((), 2, 5, "2 more bytes or characters like these")
    assert yamlsrc.load(ten + "b: \x02\n").issues[10].fix == yamlsrc._TEXT_FIX
    assert found(ten + "b: \x02\n")[10][3] == "1 more bytes or characters like these"


def test_a_bad_byte_that_breaks_the_yaml_is_named_instead_of_the_yaml_error() -> None:
    with pytest.raises(yamlsrc.YamlRefused) as exc:
        yamlsrc.load(b"ok: 1\na: [x\xff\n")
    assert place(exc.value) == (2, 6, "byte 0xff is not UTF-8 text", yamlsrc._TEXT_FIX)
    with pytest.raises(yamlsrc.YamlRefused) as first:
        yamlsrc.load(b"a: \x01\nb: [\xff\n")
    assert place(first.value)[:3] == (1, 4, "control character U+0001 is not allowed")


@pytest.mark.parametrize(("text", "where", "message"), [
    ("a:\n\tb: 1\n", (2, 1), "a tab character: YAML indents (and spaces out) with spaces only, replace the tab with "
                             "spaces"),
    ("a: 1\n  b: 2\n", (2, 4), "mapping values are not allowed here"),
    ("- a\nb: 1\n", (2, 1), "expected <block end>, but found '?' (while parsing a block collection on line 1)"),
    ('a: "x\n', (2, 1), "found unexpected end of stream (while scanning a quoted scalar on line 1)"),
    ("a: @x\n", (1, 4), "found character '@' that cannot start any token (while scanning for the next token)"),
])
def test_a_syntax_error_is_placed_and_worded(text: str, where: tuple[int, int], message: str) -> None:
    with pytest.raises(yamlsrc.YamlSyntaxError) as exc:
        yamlsrc.load(text)
    assert ((exc.value.line, exc.value.column), exc.value.message) == (where, message)
    assert str(exc.value) == f"line {where[0]}, column {where[1]}: {message}"


def test_an_empty_document_is_none_with_nothing_placed() -> None:
    for text in ("", "# only a comment\n", b""):
        doc = yamlsrc.load(text)
        assert (doc.data, doc.keys, doc.values, doc.issues) == (None, {}, {}, [])
        assert doc.locate(("pis",)) is None


# ------------------------------------------------------------------------------------------ files


def test_a_file_of_at_most_max_bytes_is_read_and_a_bigger_one_refused_with_its_whole_size(tmp_path: Path) -> None:
    file = tmp_path / "hosts.yml"
    file.write_bytes(b"a: 12345\n")  # 9 bytes
    assert yamlsrc.load_file(file, max_bytes=9).data == {"a": 12345}
    with pytest.raises(yamlsrc.YamlRefused) as exc:
        yamlsrc.load_file(file, max_bytes=8)
    assert place(exc.value) == (None, None, "the file is 9 bytes; pitunnel reads at most 8",
                                "an inventory is a few kilobytes: check that this is the right file")
    file.write_bytes(b"a: 1\n" * 100)
    with pytest.raises(yamlsrc.YamlRefused) as big:
        yamlsrc.load_file(file, max_bytes=8)
    assert big.value.message == "the file is 500 bytes; pitunnel reads at most 8"
    assert yamlsrc.load_file(file).data == {"a": 1}  # the default limit is a megabyte


def test_a_fifo_or_a_folder_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(yamlsrc.YamlRefused) as exc:
        yamlsrc.load_file(fifo)
    assert place(exc.value) == (None, None, "is not a regular file", "name a YAML file")
    with pytest.raises(OSError):
        yamlsrc.load_file(tmp_path)


# ------------------------------------------------------------------------------------------ long keys


def test_a_key_of_exactly_1024_characters_on_the_line_of_a_syntax_error_is_not_blamed() -> None:
    with pytest.raises(yamlsrc.YamlSyntaxError) as exc:
        yamlsrc.load("k" * 1024 + ": ]\n")
    assert (exc.value.line, exc.value.column) == (1, 1027)
    assert exc.value.message == "expected the node content, but found ']' (while parsing a block node on line 1)"


@pytest.mark.parametrize(("text", "column"), [
    ("  - - " + "k" * 1025 + ": 1\n", 7),  # list items in list items: the key after the dashes
    ("-   " + "k" * 1025 + ": 1\n", 5),
])
def test_a_too_long_key_after_list_dashes_is_placed_at_its_first_character(text: str, column: int) -> None:
    error = refusal(text)
    assert (error.line, error.column) == (1, column)
    assert error.message.startswith("the key 'kkkkkkkkkkkkkkkkkkkk... (1025 characters)' is 1025 characters long")


def test_a_duplicate_in_an_aliased_mapping_is_flagged_once_not_once_per_alias() -> None:
    doc = yamlsrc.load("a: &m {k: 1, k: 2}\nb: *m\nc: *m\n")
    assert doc.data == {"a": {"k": 2}, "b": {"k": 2}, "c": {"k": 2}}
    assert [(i.path, i.line, i.column, i.message) for i in doc.issues] == [
        (("a", "k"), 1, 14, "duplicate key 'k' on lines 1 and 1")]


def test_past_what_python_can_nest_the_reader_refuses_without_a_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsrc, "MAX_DEPTH", 10**6)  # the limit that stops it first, taken away
    assert place(refusal("a: " + "[" * 5000 + "]" * 5000 + "\n")) == (
        None, None, "the file nests too deeply to read",
        "an inventory nests 6 deep: close the brackets or reduce the indentation")


def test_a_character_the_cleaning_missed_is_still_one_error_in_the_readers_words(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlsrc, "_clean", lambda source: (source, []))
    with pytest.raises(yamlsrc.YamlSyntaxError) as exc:
        yamlsrc.load("a: x\x01\n")
    assert (exc.value.line, exc.value.column) == (None, None)
    assert exc.value.message == ('unacceptable character #x0001: special characters are not allowed\n'
                                 '  in "<unicode string>", position 4')


@pytest.mark.parametrize(("text", "message"), [
    ("a: !!map x\n", "expected a mapping node, but found scalar"),
    ("a: !!seq x\n", "expected a sequence node, but found scalar"),
])
def test_a_plain_value_tagged_as_a_collection_is_an_error_at_the_value_not_an_empty_one(text: str,
                                                                                        message: str) -> None:
    with pytest.raises(yamlsrc.YamlSyntaxError) as exc:
        yamlsrc.load(text)
    assert (exc.value.line, exc.value.column, exc.value.message) == (1, 4, message)
