"""The inventory's value checks, called directly: each bound, and the exact words of what is wrong and how to fix
it (the checks the schema builds at import are called here, so a change to them is seen)."""

from __future__ import annotations

import pytest

from pitunnel.inventory import values
from pitunnel.inventory.errors import Invalid


def refused(check: values.Check, value: object) -> tuple[str, str]:
    with pytest.raises(Invalid) as exc:
        check(value)
    return exc.value.message, exc.value.fix


def test_a_number_in_a_range_includes_both_ends() -> None:
    check = values.int_in(3, 7, "count")
    assert check(3) == 3 and check(7) == 7
    assert refused(check, 2) == ("2 is out of range", "use a count from 3 to 7")
    assert refused(check, 8) == ("8 is out of range", "use a count from 3 to 7")
    assert refused(check, "5") == ("expected a whole number, got '5' (a string)", "write a whole number without quotes")
    assert refused(check, True)[1] == "write a whole number without quotes (yes/no/on/off/true/false are booleans in YAML)"


def test_ports() -> None:
    assert values.port(1) == 1 and values.port(65535) == 65535
    assert refused(values.port, 0) == ("0 is out of range", "use a port from 1 to 65535")
    assert refused(values.port, 65536) == ("65536 is out of range", "use a port from 1 to 65535")
    assert values.unprivileged_port(1024) == 1024
    assert refused(values.unprivileged_port, 1023) == ("1023 is out of range", "use a port from 1024 to 65535")
    assert values.remote_port("auto") == 0 and values.remote_port(20000) == 20000
    assert refused(values.remote_port, 80) == ("80 is out of range", "use a port from 1024 to 65535 (sshd cannot bind "
                                               "lower ports for the unprivileged tunnel account), or auto")
    assert refused(values.remote_port, "20000") == ("'20000' (a string) is not a port",
                                                    "use a port from 1024 to 65535, or auto")


def test_a_choice_names_the_options() -> None:
    check = values.choice("ssh", "http")
    assert check("http") == "http"
    assert refused(check, "ftp") == ("'ftp' (a string) is not allowed", "use one of: ssh, http")
    assert refused(check, 3) == ("3 (a number) is not allowed", "use one of: ssh, http")


def test_a_bad_name_gets_a_suggestion_when_there_is_one() -> None:
    fix = ("use 1-31 lowercase letters, digits or '-', starting with a letter "
           "(names become unix user, file and systemd unit names)")
    assert refused(values.name, "Pi_1") == ("'Pi_1' is not a valid name", fix + ", e.g. 'pi-1'")
    assert refused(values.name, "42") == ("'42' is not a valid name", fix)  # nothing left to suggest
    assert refused(values.name, "--Garden  Pi--") == ("'--Garden  Pi--' is not a valid name", fix + ", e.g. 'garden-pi'")
    assert values.name("pi-1") == "pi-1"


def test_text_checks_say_what_the_text_is_not() -> None:
    assert refused(values.user, "Bad User") == (
        "'Bad User' is not a valid user name",
        "use up to 32 lowercase letters, digits, '_' or '-', starting with a letter or '_'")
    assert values.user("_apt") == "_apt"
    assert refused(values.server_name, "a..b") == ("'a..b' is not a valid server name",
                                                   "use one host name such as pi1.example.com or *.example.com")
    assert values.server_name("*.example.org") == "*.example.org"
    assert refused(values.remote_path, "/etc/a b")[0] == "'/etc/a b' is not an absolute path of plain ASCII characters"
    assert refused(values.url_path, "/a/../b/")[0].startswith("'/a/../b/' has a '.' or '..' segment")
    assert refused(values.url_path, "/a")[0] == "'/a' is not a valid location path"
    assert refused(values.text, " ") == ("is empty", "give a value, or remove the key")
    long = "x" * (values.MAX_TEXT + 1)
    assert refused(values.text, long) == (f"is {values.MAX_TEXT + 1} characters long", f"use at most {values.MAX_TEXT} characters")
    assert values.text("x" * values.MAX_TEXT) == "x" * values.MAX_TEXT


def test_seconds_and_counts() -> None:
    assert values.seconds(1) == 1.0 and values.seconds(3600) == 3600.0
    fix = "use a number of seconds from 1 to 3600, such as 10"
    assert refused(values.seconds, 0.5) == ("0.5 is out of range", fix)
    assert refused(values.seconds, 0) == ("0 is not positive", fix)
    assert refused(values.seconds, 3601) == ("3601 is out of range", fix)
    assert refused(values.seconds, float("inf")) == ("inf is not a number of seconds", fix)
    assert refused(values.seconds, True)[0] == "expected a number of seconds, got true (a boolean)"
    assert values.at_least_one(1) == 1 and refused(values.at_least_one, 0) == ("0 is too small", "use a whole number of 1 or more")


def test_port_range_and_sizes() -> None:
    fix = "write [low, high] with 1024 <= low <= high <= 65535, e.g. [20000, 29999]"
    assert values.port_range([20000, 20000]) == (20000, 20000)
    assert refused(values.port_range, [20001, 20000]) == ("low end 20001 is above high end 20000", fix)
    assert refused(values.port_range, [80, 20000]) == ("80 is out of range", fix)
    assert refused(values.port_range, [1, 2, 3]) == ("expected a list of two ports, got a list", fix)
    assert values.nginx_size(0) == "0" and values.nginx_size("50m") == "50m"
    assert refused(values.nginx_size, True)[0] == "true (a boolean) is not an nginx size"
    assert refused(values.nginx_size, "1t")[0] == "'1t' (a string) is not an nginx size"


def test_tunnel_accounts_that_pitunnel_would_take_over_are_refused() -> None:
    assert values.tunnel_user("pitunnel") == "pitunnel"
    assert refused(values.tunnel_user, "root") == ("the tunnel must not run as root",
                                                   "use an unprivileged account such as 'pitunnel'")
    for account in ("www-data", "_apt", "systemd-network", "debian-tor"):
        message, fix = refused(values.tunnel_user, account)
        assert message.startswith(f"'{account}' is a system account") and fix == "use an account only pitunnel uses, such as 'pitunnel'"


def test_schema_defaults_are_the_models_own_written_as_yaml_would() -> None:
    import dataclasses

    from pitunnel.inventory.fields import MODEL, Field, _defaults_from

    @dataclasses.dataclass
    class Spec:
        count: int = 5
        pair: tuple[int, int] = (1, 2)
        own: str = "model's"
        bare: str = dataclasses.field(default="x")

    table = {"count": Field(values.integer, MODEL), "pair": Field(values.port_range, MODEL),
             "own": Field(values.text, "the table's"), "bare": Field(values.text)}
    result = _defaults_from(Spec, table)
    assert list(result) == ["count", "pair", "own", "bare"]
    assert (result["count"].default, result["pair"].default) == (5, [1, 2])  # a tuple as a YAML list
    assert result["own"].default == "the table's" and result["bare"].default is None  # only MODEL is replaced
    assert result["count"].check is values.integer

    @dataclasses.dataclass
    class Bare:
        needed: int

    with pytest.raises(AssertionError, match="Bare.needed has no default"):
        _defaults_from(Bare, {"needed": Field(values.integer, MODEL)})


def test_a_text_check_built_here() -> None:
    digits = values._text_that(str.isdigit, "digits only", "write digits")
    assert digits("123") == "123"
    assert refused(digits, "12a") == ("'12a' is not digits only", "write digits")
    assert refused(digits, 5)[0] == "expected text, got 5 (a number)"


def test_host_names_up_to_253_characters() -> None:
    name = ".".join(["a" * 63] * 3 + ["a" * 61])
    assert len(name) == 253 and values.address(name) == name
    assert refused(values.address, name + "a")[0].endswith("is not an IP address or host name")
    assert refused(values.address, "10.0.0.300")[0] == "'10.0.0.300' is not an IP address or host name"


def test_host_keys_refused_with_the_reason() -> None:
    import base64
    fix = "paste the host's public key as '<type> <base64>', e.g. the contents of /etc/ssh/ssh_host_ed25519_key.pub"
    assert refused(values.host_key, "ssh-dss AAAA") == ("is not an SSH public key", fix)
    assert refused(values.host_key, "ssh-ed25519 !!!") == ("the key's base64 part is malformed", fix)
    rsa_blob = base64.b64encode(b"\0\0\0\x07ssh-rsa").decode()
    assert refused(values.host_key, f"ssh-ed25519 {rsa_blob}")[0] == \
        "the key's base64 part is not a ssh-ed25519 key (truncated or mixed up?)"
    short = base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x01x").decode()
    message = refused(values.host_key, f"ssh-ed25519 {short}")[0]
    assert message.startswith("the key's base64 part is not a whole ssh-ed25519 key (") and message != \
        "the key's base64 part is not a whole ssh-ed25519 key ()"


def test_a_name_suggestion_is_cut_to_31_characters_without_a_dash_at_either_end() -> None:
    fix = refused(values.name, "9-" + "Ab" * 20 + "-")[1]
    assert fix.endswith(", e.g. '" + "ab" * 15 + "a'")
    assert refused(values.name, "Pi_" + "x" * 27 + "_y")[1].endswith(", e.g. 'pi-" + "x" * 27 + "'")  # cut at a dash
    message, fix = refused(values.url_path, "/a/./b/")
    assert message == ("'/a/./b/' has a '.' or '..' segment: nginx resolves those in every request path, so this "
                       "location would never match (or would be another one)")
    assert fix == "write the path without '.' and '..' segments, e.g. /pi1/web/"


def test_an_address_that_is_neither_ip_nor_host_name_shows_both_forms() -> None:
    assert refused(values.address, "vps example") == (
        "'vps example' is not an IP address or host name",
        "use an IPv4 or IPv6 address without brackets (203.0.113.10, 2001:db8::1) or a DNS name (vps.example.com)")


def test_a_listen_address_without_a_valid_port_names_the_value() -> None:
    fix = "write an IPv4 address and a port, e.g. 127.0.0.1:9100 (loopback: only the VPS itself reads it)"
    assert values.listen_address("127.0.0.1:9100") == "127.0.0.1:9100"
    assert refused(values.listen_address, "127.0.0.1:0") == ("'127.0.0.1:0' (a string) has no valid port", fix)
    assert refused(values.listen_address, "127.0.0.1:x") == ("'127.0.0.1:x' (a string) has no valid port", fix)


def test_an_empty_vps_list_shows_a_name_and_a_list() -> None:
    assert refused(values.names, []) == ("the list is empty",
                                         "name at least one VPS, e.g. 'vps: main' or 'vps: [main, backup]'")
