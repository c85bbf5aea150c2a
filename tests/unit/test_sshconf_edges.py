"""The ssh config read as OpenSSH reads it, at its edges, without the network: ports at their bounds and in other
scripts' digits, ProxyJump chains as long as allowed and one hop longer, each jump's settings and where they
came from, `ProxyJump none`, a ProxyCommand beside a ProxyJump, Include paths with spaces or `#`, a Pi reached
only through its tunnel, and the messages of a config that cannot be read."""

from __future__ import annotations

import dataclasses
import getpass
from pathlib import Path

import paramiko
import pytest

from pitunnel import sshconf
from pitunnel.inventory import PiSpec
from pitunnel.sshconf import DEFAULT, INVENTORY, SSH_CONFIG, BadSshConfig, resolve


def pi(address: str = "mypi", *, given: frozenset[str] = frozenset({"address"}), **changes: object) -> PiSpec:
    spec = PiSpec(name="pi1", role="pi", address=address, port=22, user="pi", key=None, password_file=None,
                  sudo_password_file=None, host_key=None, connect_timeout=5, vpses=("main",), given=given)
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def config(text: str) -> paramiko.SSHConfig:
    return paramiko.SSHConfig.from_text(text)


def refused(spec: PiSpec, ssh_config: paramiko.SSHConfig | None) -> str:
    with pytest.raises(BadSshConfig) as caught:
        resolve(spec, ssh_config)
    return str(caught.value)


@pytest.mark.parametrize(("port", "taken"), [("1", 1), ("65535", 65535)])
def test_a_port_from_1_to_65535_is_taken(port: str, taken: int) -> None:
    assert resolve(pi(), config(f"Host mypi\n  Port {port}\n")).target.port == taken


@pytest.mark.parametrize("port", ["0", "65536", "\u0662\u0662", "２２", "x"])
def test_a_port_out_of_range_or_not_in_ascii_digits_is_refused_as_ssh_would(port: str) -> None:
    assert refused(pi(), config(f"Host mypi\n  Port {port}\n")) == (
        f"the ssh config gives mypi the port {port!r}: use a port from 1 to 65535")


def test_the_route_names_the_host_as_written_and_has_no_jump_source_without_jumps() -> None:
    route = resolve(pi("mypi"), config("Host mypi\n  HostName 10.0.0.9\n"))
    assert (route.target.alias, route.target.hostname, route.jumps, route.jump_source) == (
        "mypi", "10.0.0.9", (), DEFAULT)
    assert resolve(pi("10.0.0.5"), None).jump_source == DEFAULT


def chain(length: int) -> str:
    """Host h0 jumps through h1, h1 through h2, ... h(length) jumps nowhere."""
    return "".join(f"Host h{i}\n  HostName 10.0.0.{i}\n" + (f"  ProxyJump h{i + 1}\n" if i < length else "")
                   for i in range(length + 1))


def test_a_chain_of_8_jumps_is_followed_in_order_and_9_are_one_clear_error() -> None:
    route = resolve(pi("h0"), config(chain(8)))
    assert [hop.alias for hop in route.jumps] == [f"h{i}" for i in range(8, 0, -1)]  # the farthest first
    assert [hop.hostname for hop in route.jumps] == [f"10.0.0.{i}" for i in range(8, 0, -1)]
    assert refused(pi("h0"), config(chain(9))) == "ProxyJump 'h9' leads through more than 8 hops (a loop?)"


def test_a_proxyjump_list_of_8_entries_is_followed_and_9_are_refused() -> None:
    eight = ",".join(f"j{i}" for i in range(8))
    route = resolve(pi(), config(f"Host mypi\n  ProxyJump {eight}\n"))
    assert [hop.alias for hop in route.jumps] == [f"j{i}" for i in range(8)]
    nine = eight + ",j8"
    assert refused(pi(), config(f"Host mypi\n  ProxyJump {nine}\n")) == (
        f"ProxyJump {nine!r} leads through more than 8 hops (a loop?)")


def test_a_hops_own_jumps_count_toward_the_8() -> None:
    # mypi jumps through a then b; b jumps through c1..c7: 9 hops in all
    text = "Host mypi\n  ProxyJump a,b\nHost b\n  ProxyJump c1,c2,c3,c4,c5,c6,c7\n"
    assert refused(pi(), config(text)) == "ProxyJump 'c1,c2,c3,c4,c5,c6,c7' leads through more than 8 hops (a loop?)"
    route = resolve(pi(), config(text.replace(",c7", "")))
    assert [hop.alias for hop in route.jumps] == ["a", "c1", "c2", "c3", "c4", "c5", "c6", "b"]


@pytest.mark.parametrize("value", ["none", "NONE", " None "])
def test_proxyjump_none_means_no_jump(value: str) -> None:
    route = resolve(pi(), config(f"Host mypi\n  ProxyJump {value}\n"))
    assert (route.jumps, route.jump_source) == ((), DEFAULT)


def test_a_jump_without_settings_gets_port_22_the_local_user_and_the_default_keys() -> None:
    (hop,) = resolve(pi(), config("Host mypi\n  ProxyJump bare\n")).jumps
    assert (hop.alias, hop.hostname, hop.port, hop.user, hop.identities_only, hop.host_key_alias) == (
        "bare", "bare", 22, getpass.getuser(), False, None)
    assert dict(hop.sources) == {"hostname": SSH_CONFIG, "port": DEFAULT, "user": DEFAULT}
    assert [(i.path, i.source) for i in hop.identities] == [
        (Path(p).expanduser(), DEFAULT) for p in sshconf.DEFAULT_IDENTITIES]


def test_a_jumps_port_and_user_from_its_entry_or_its_host_block_are_the_ssh_configs() -> None:
    text = ("Host mypi\n  ProxyJump me@inline:2201,blocked\nHost blocked\n  Port 2202\n  User them\n"
            "  IdentityFile /keys/jump\n  HostKeyAlias jump-home\n")
    inline, blocked = resolve(pi(), config(text)).jumps
    assert (inline.user, inline.port) == ("me", 2201)
    assert dict(inline.sources) == {"hostname": SSH_CONFIG, "port": SSH_CONFIG, "user": SSH_CONFIG}
    assert (blocked.user, blocked.port, blocked.host_key_alias, blocked.known_name) == (
        "them", 2202, "jump-home", "jump-home")
    assert dict(blocked.sources) == {"hostname": SSH_CONFIG, "port": SSH_CONFIG, "user": SSH_CONFIG}
    assert [(i.path, i.source) for i in blocked.identities] == [(Path("/keys/jump"), SSH_CONFIG)]


def test_a_jump_with_identities_only_and_no_file_offers_no_key_file() -> None:
    (hop,) = resolve(pi(), config("Host mypi\n  ProxyJump j\nHost j\n  IdentitiesOnly yes\n")).jumps
    assert (hop.identities_only, hop.identities) == (True, ())
    (hop,) = resolve(pi(), config("Host mypi\n  ProxyJump j\nHost j\n  IdentitiesOnly YES\n")).jumps
    assert hop.identities_only


def test_the_target_with_identities_only_yes_in_capitals_offers_no_default_key() -> None:
    target = resolve(pi(), config("Host mypi\n  IdentitiesOnly Yes\n")).target
    assert (target.identities_only, target.identities) == (True, ())


def test_a_proxycommand_beside_a_proxyjump_is_left_to_the_proxyjump_and_proxycommand_none_is_no_proxy() -> None:
    route = resolve(pi(), config("Host mypi\n  ProxyJump j\n  ProxyCommand nc %h %p\n"))
    assert [hop.alias for hop in route.jumps] == ["j"]
    assert resolve(pi(), config("Host mypi\n  ProxyCommand none\n")).jumps == ()
    assert refused(pi(), config("Host mypi\n  ProxyCommand nc %h %p\n")) == (
        "the ssh config gives mypi a ProxyCommand, which pitunnel does not run: use ProxyJump there, or "
        "'ssh_config: none' in the inventory")


def test_a_pi_reached_only_through_its_tunnel_is_no_name_to_look_up_in_the_ssh_config() -> None:
    text = "Host pi1\n  HostName 192.168.1.20\n  Port 2222\n  User alice\n  ProxyCommand nc %h %p\n"
    route = resolve(pi("pi1", tunnel_only=True), config(text))
    assert (route.target.hostname, route.target.port, route.target.user, route.jumps) == ("pi1", 22, "pi", ())
    assert dict(route.target.sources) == {"hostname": INVENTORY, "port": DEFAULT, "user": DEFAULT}
    assert resolve(pi("pi1"), config(text.replace("  ProxyCommand nc %h %p\n", ""))).target.port == 2222


def test_an_ssh_config_that_cannot_be_read_is_named_with_why(tmp_path: Path) -> None:
    with pytest.raises(BadSshConfig) as caught:
        sshconf.load(tmp_path / "none-such")
    assert str(caught.value) == f"cannot read the ssh config {tmp_path / 'none-such'}: No such file or directory"
    bad = tmp_path / "config"
    bad.write_text("Host a\n  Port\n")  # a keyword without a value
    with pytest.raises(BadSshConfig) as caught:
        sshconf.load(bad)
    assert str(caught.value).startswith(f"cannot read the ssh config {bad}: ")
    assert str(caught.value) != f"cannot read the ssh config {bad}: "
    assert sshconf.load(None) is None


def test_an_include_with_a_space_or_a_hash_in_its_file_name_is_followed_as_openssh_follows_it(tmp_path: Path) -> None:
    (tmp_path / "my file.conf").write_text("Host a\n  Port 2701\n")
    (tmp_path / "b#c.conf").write_text("Host b\n  Port 2702\n")
    main = tmp_path / "config"
    main.write_text(f"Include \"{tmp_path}/my file.conf\" {tmp_path}/b#c.conf\n")
    loaded = sshconf.load(main)
    assert loaded is not None
    assert (loaded.lookup("a").get("port"), loaded.lookup("b").get("port")) == ("2701", "2702")


def test_an_include_after_host_star_is_followed_and_after_a_named_host_refused(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("Host x\n  Port 2801\n")
    main = tmp_path / "config"
    main.write_text(f"Host a\n  Port 1\nHost *\nInclude {tmp_path}/x\n")
    loaded = sshconf.load(main)
    assert loaded is not None and loaded.lookup("x").get("port") == "2801"
    main.write_text(f"Host *\n  User u\nHost a b\nInclude {tmp_path}/x\n")
    with pytest.raises(BadSshConfig, match=f"^{main}:4: Include under a Host or Match line"):
        sshconf.load(main)
