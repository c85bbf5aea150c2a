"""`invoke migrate` (issue 15, item 3) without hosts: the inventory rewritten in place (comments and the rest kept,
only the Pi's `vps:` value changed), the ports the Pis get on the new VPS, and the ports file following them."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pitunnel.inventory import load_inventory, ports_file
from pitunnel.inventory.rewrite import CannotRewrite, backup_path, pi_vps_rewritten, set_pi_vps
from pitunnel.roles.migrate import MigrateRefused, ports_follow, read_state, widened, write_state

INVENTORY = """\
# my fleet
vps:
  old: {address: 203.0.113.10, port_range: [20000, 20100]}   # the VPS we leave
  new: {address: 198.51.100.20, port_range: [20000, 20100]}
pis:
  pi0: {address: 10.0.0.9, vps: new, tunnels: {ssh: {type: ssh}}}
  pi1:
    address: 10.0.0.1
    vps: old    # moves soon
    tunnels:
      ssh: {type: ssh}
      web: {type: http, local_port: 8080, server_name: a.example.com}
  pi2: {address: 10.0.0.2, vps: "old", tunnels: {ssh: {type: ssh, remote_port: 22222}}}
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str = INVENTORY) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    return path


def test_the_rewrite_changes_only_that_value_keeping_comments_and_quotes(tmp_path: Path) -> None:
    path = write(tmp_path)
    load_inventory(path)
    assert set_pi_vps(path, ["pi1", "pi2", "pi0"], "new") == ["pi1", "pi2"]  # pi0 is on new already
    after = path.read_text()
    assert after == INVENTORY.replace("vps: old    # moves soon", "vps: new    # moves soon").replace(
        'vps: "old"', 'vps: "new"')
    assert backup_path(path).read_text() == INVENTORY
    inv = load_inventory(path)
    assert [p.all_vps for p in inv.pis.values()] == [("new",), ("new",), ("new",)]
    assert set_pi_vps(path, ["pi1"], "new") == [] and path.read_text() == after  # a rerun changes nothing


@pytest.mark.parametrize("written, expected", [
    ("vps: [old]", "vps: [new]"),
    ("vps:\n      - old  # only one", "vps:\n      - new  # only one"),
    ("vps: 'old'", "vps: 'new'"),
])
def test_a_list_of_one_or_a_quoted_name_is_rewritten_too(written: str, expected: str) -> None:
    text = f"pis:\n  pi1:\n    address: 10.0.0.1\n    {written}\n    user: pi\n"
    assert pi_vps_rewritten(text, "pi1", "new") == text.replace(written, expected)


def test_a_vps_not_written_on_the_pi_is_refused_with_what_to_do() -> None:
    with pytest.raises(CannotRewrite, match="add `vps: new` under pis.pi1 by hand"):
        pi_vps_rewritten("defaults: {vps: old}\npis:\n  pi1: {address: 10.0.0.1}\n", "pi1", "new")
    with pytest.raises(CannotRewrite, match="not a single VPS"):
        pi_vps_rewritten("pis:\n  pi1: {address: 10.0.0.1, vps: [old, new]}\n", "pi1", "new")


def test_ports_keep_their_numbers_or_are_mapped_and_said_and_the_ports_file_follows(tmp_path: Path) -> None:
    path = write(tmp_path)
    inv = load_inventory(path)
    old = {t.name: t.remote_port for t in inv.pis["pi1"].tunnels}
    assert old["ssh"] == inv.pis["pi0"].tunnels[0].remote_port  # the same auto port on both VPSes
    wide, said = widened(inv, [inv.pis["pi1"], inv.pis["pi2"]], "new")
    pi1 = wide.pis["pi1"]
    assert pi1.all_vps == ("old", "new")
    assert pi1.path("old").tunnels[1].remote_port == old["web"] == pi1.path("new").tunnels[1].remote_port  # kept
    mapped = pi1.path("new").tunnels[0].remote_port
    assert mapped != old["ssh"] and said == [f"pi1/ssh: port {old['ssh']} is taken on new: it gets {mapped} there"]
    assert wide.pis["pi2"].path("new").tunnels[0].remote_port == 22222
    ports_follow(inv, wide, ["pi1"], "old", "new")
    set_pi_vps(path, ["pi1"], "new")
    moved = load_inventory(path).pis["pi1"]
    assert [t.remote_port for t in moved.tunnels] == [mapped, old["web"]]  # what the new VPS listens on
    assert "pi1/ssh" not in ports_file(path).read_text().split("new:")[0]  # off the old VPS's part


def test_an_explicit_port_taken_on_the_new_vps_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, INVENTORY.replace("vps: new, tunnels: {ssh: {type: ssh}}",
                                             "vps: new, tunnels: {ssh: {type: ssh, remote_port: 22222}}"))
    inv = load_inventory(path)
    with pytest.raises(MigrateRefused, match="remote_port 22222 is taken on new"):
        widened(inv, [inv.pis["pi2"]], "new")


def test_the_state_file_says_what_is_left(tmp_path: Path) -> None:
    path = write(tmp_path)
    assert read_state(path) is None
    write_state(path, "old", "new", ["pi1"])
    assert read_state(path) == ("old", "new", ["pi1"])
