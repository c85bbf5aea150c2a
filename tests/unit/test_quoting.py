"""The quoting filters every template uses (pitunnel/quoting.py): plain values as they are, others quoted by
their language's rules, values a language cannot hold refused. test_templates_hostile.py proves the rendered files
with the real parsers (bash, ssh -G, systemd-analyze, nginx -t)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from pitunnel import quoting
from pitunnel.quoting import Unquotable


def test_plain_values_are_written_as_they_are() -> None:
    for value in ("pi1", "/etc/pitunnel", "127.0.0.1:9100", "vps.example.com", "a_b-c@d+e,f"):
        for name, render in quoting.FILTERS.items():
            assert render(value) == value or name in ("nginx_string", "ssh_tokens"), (name, value)
    assert quoting.nginx_string("pi1") == '"pi1"'
    assert quoting.ssh_tokens("fe80::1%eth0") == "fe80::1%%eth0" and quoting.ssh("fe80::1%eth0") == "fe80::1%eth0"


def test_each_language_quotes_by_its_own_rules() -> None:
    assert quoting.sh("a b'c") == "'a b'\"'\"'c'"
    assert quoting.ssh("/a b#c") == '"/a b#c"' and quoting.ssh("a=b") == '"a=b"'
    assert quoting.systemd("50% of pi1") == "50%% of pi1"
    assert quoting.systemd_word('/a b"c\\d') == '"/a b\\"c\\\\d"'
    assert quoting.systemd_exec("a$b%c") == '"a$$b%%c"'
    assert quoting.nginx("/etc/x;y{z}#w") == '"/etc/x;y{z}#w"' and quoting.nginx('a"b\\c') == '"a\\"b\\\\c"'
    assert quoting.nginx("*.example.com") == "*.example.com"


CONTROL = "holds a control character, which {} cannot hold"
SSH = "cannot be written in an ssh config (a quote, backslash, '$' or nothing)"
UNIT = "cannot be a unit file setting (space at an end, or a trailing backslash)"
NGINX = "cannot be written in an nginx config ('$' starts a variable)"


@pytest.mark.parametrize(("render", "value", "says"), [
    (quoting.sh, "a\nb", CONTROL.format("a script line")), (quoting.sh, "a\x85b", CONTROL.format("a script line")),
    (quoting.ssh, "a\nProxyCommand x", CONTROL.format("an ssh config")),
    (quoting.ssh_tokens, "a\x1bb", CONTROL.format("an ssh config")),
    (quoting.ssh, 'a"b', SSH), (quoting.ssh, "a\\b", SSH), (quoting.ssh, "${HOME}", SSH), (quoting.ssh, "", SSH),
    (quoting.systemd, "a\nExecStartPre=x", CONTROL.format("a unit file")), (quoting.systemd, "a\\", UNIT),
    (quoting.systemd, " a", UNIT), (quoting.systemd_word, "a\rb", CONTROL.format("a unit file")),
    (quoting.systemd_exec, "a\tb", CONTROL.format("a unit file")),
    (quoting.systemd_exec, ";", "';' alone separates commands on an Exec line"),
    (quoting.nginx, "$host", NGINX), (quoting.nginx, "", NGINX),
    (quoting.nginx, "a\u2028b", CONTROL.format("an nginx config")),
    (quoting.nginx_plain, "a b", "cannot be part of an nginx token"),
    (quoting.nginx_plain, "a\x7fb", CONTROL.format("an nginx config")),
])
def test_what_a_language_cannot_hold_is_refused_naming_the_language(render: Callable[[object], str], value: str,
                                                                    says: str) -> None:
    with pytest.raises(Unquotable) as refused:
        render(value)
    assert str(refused.value) == (says if value == ";" else f"{value!r} {says}")


@pytest.mark.parametrize("value", ["$(touch x)", "a b", "`id`", "'\"", "*", "a;b", "#c", "~root", "é"])
def test_bash_reads_a_quoted_value_back_as_one_word(value: str, tmp_path: object) -> None:
    out = subprocess.run(["bash", "-c", f"set -- {quoting.sh(value)}; printf '%s|%s' \"$#\" \"$1\""],
                         capture_output=True, text=True, check=True, cwd=str(tmp_path)).stdout
    assert out == f"1|{value}"
