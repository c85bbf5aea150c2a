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


@pytest.mark.parametrize(("render", "value"), [
    (quoting.sh, "a\nb"), (quoting.ssh, "a\nProxyCommand x"), (quoting.ssh, 'a"b'), (quoting.ssh, "a\\b"),
    (quoting.ssh, "${HOME}"), (quoting.ssh, ""), (quoting.systemd, "a\nExecStartPre=x"), (quoting.systemd, "a\\"),
    (quoting.systemd, " a"), (quoting.systemd_word, "a\rb"), (quoting.systemd_exec, ";"), (quoting.nginx, "$host"),
    (quoting.nginx, "a\u2028b"), (quoting.nginx, ""), (quoting.nginx_plain, "a b"), (quoting.sh, "a\x85b"),
])
def test_what_a_language_cannot_hold_is_refused(render: Callable[[object], str], value: str) -> None:
    with pytest.raises(Unquotable):
        render(value)


@pytest.mark.parametrize("value", ["$(touch x)", "a b", "`id`", "'\"", "*", "a;b", "#c", "~root", "é"])
def test_bash_reads_a_quoted_value_back_as_one_word(value: str, tmp_path: object) -> None:
    out = subprocess.run(["bash", "-c", f"set -- {quoting.sh(value)}; printf '%s|%s' \"$#\" \"$1\""],
                         capture_output=True, text=True, check=True, cwd=str(tmp_path)).stdout
    assert out == f"1|{value}"
