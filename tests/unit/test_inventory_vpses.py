"""A Pi with several VPSes (issue 16): the `vps:` list, remote ports per VPS or the same everywhere, and every
clash named (pure: tmp_path only)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from pitunnel.inventory import Inventory, InventoryError, load_inventory, ports_file

TWO = """
vps:
  main: {address: 203.0.113.10, port_range: [20000, 20100]}
  backup: {address: 198.51.100.20, port_range: [20000, 20100]}
pis:
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def ports(inv: Inventory) -> dict[str, dict[str, int]]:
    """{"pi/tunnel": {vps: port}} for every tunnel on every VPS of its Pi."""
    return {f"{pi.name}/{t.name}": dict(t.ports) for pi in inv.pis.values() for t in pi.tunnels}


def problems(path: Path) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    return [f"{p.key} line {p.line}: {p.message} | {p.fix}" for p in caught.value.problems]


def test_a_single_name_keeps_working_and_a_list_names_every_vps(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, TWO + """
      pi1: {address: 10.0.0.1, vps: [main, backup], tunnels: {ssh: {type: ssh}}}
      pi2: {address: 10.0.0.2, vps: backup, tunnels: {ssh: {type: ssh}}}
    """))
    pi1, pi2 = inv.pis["pi1"], inv.pis["pi2"]
    assert (pi1.first_vps, pi1.all_vps) == ("main", ("main", "backup"))
    assert (pi2.first_vps, pi2.all_vps) == ("backup", ("backup",))
    assert [v.name for v in inv.vpses_of(pi1)] == ["main", "backup"]
    assert [p.name for p in inv.pis_on(inv.vps["backup"])] == ["pi1", "pi2"]
    assert [p.name for p in inv.pis_on(inv.vps["main"])] == ["pi1"]


def test_ports_are_given_out_per_vps_and_recorded_per_vps(tmp_path: Path) -> None:
    path = write(tmp_path, TWO + """
      pi0: {address: 10.0.0.9, vps: backup, tunnels: {ssh: {type: ssh}}}
      pi1: {address: 10.0.0.1, vps: [main, backup], tunnels: {ssh: {type: ssh}, web: {type: http}}}
    """)
    inv = load_inventory(path)
    assert ports(inv) == {"pi0/ssh": {"backup": 20000},
                          "pi1/ssh": {"main": 20000, "backup": 20001}, "pi1/web": {"main": 20001, "backup": 20002}}
    # the Pi through each VPS: its tunnels with their ports there
    assert [t.remote_port for t in inv.pis["pi1"].path("backup").tunnels] == [20001, 20002]
    assert [t.remote_port for t in inv.pis["pi1"].tunnels] == [20000, 20001]  # through its first VPS
    assert yaml.safe_load(ports_file(path).read_text()) == {
        "main": {"pi1/ssh": 20000, "pi1/web": 20001},
        "backup": {"pi0/ssh": 20000, "pi1/ssh": 20001, "pi1/web": 20002}}
    assert ports(load_inventory(path)) == ports(inv)  # stable


def test_same_port_everywhere_takes_a_port_free_on_every_vps(tmp_path: Path) -> None:
    path = write(tmp_path, TWO + """
      pi0: {address: 10.0.0.9, vps: backup, tunnels: {ssh: {type: ssh}}}
    """)
    assert ports(load_inventory(path)) == {"pi0/ssh": {"backup": 20000}}
    path.write_text(path.read_text() + "      pi1: {address: 10.0.0.1, vps: [main, backup], same_port_everywhere: true,"
                    " tunnels: {ssh: {type: ssh}, web: {type: http}}}\n")
    inv = load_inventory(path)
    # 20000 is pi0's on backup (recorded): pi1 gets the lowest ports free on both, and pi0 keeps its own
    assert ports(inv) == {"pi0/ssh": {"backup": 20000}, "pi1/ssh": {"main": 20001, "backup": 20001},
                          "pi1/web": {"main": 20002, "backup": 20002}}
    assert ports(load_inventory(path)) == ports(inv)
    # a new Pi on backup alone gets the next port there, and pi1's shared ports do not move
    path.write_text(path.read_text() + "      pi2: {address: 10.0.0.2, vps: backup, tunnels: {ssh: {type: ssh}}}\n")
    again = ports(load_inventory(path))
    assert again["pi1/ssh"] == {"main": 20001, "backup": 20001} and again["pi2/ssh"] == {"backup": 20003}


def test_same_port_everywhere_refused_naming_every_vps_when_no_port_is_free_on_all(tmp_path: Path) -> None:
    path = write(tmp_path, """
    vps:
      main: {address: 203.0.113.10, port_range: [20000, 20001]}
      backup: {address: 198.51.100.20, port_range: [20001, 20002]}
    pis:
      pi0: {address: 10.0.0.9, vps: backup, tunnels: {ssh: {type: ssh, remote_port: 20001}}}
      pi1: {address: 10.0.0.1, vps: [main, backup], same_port_everywhere: true, tunnels: {ssh: {type: ssh}}}
    """)
    [problem] = problems(path)
    assert "pis.pi1.tunnels.ssh.remote_port" in problem
    assert "no port is free on every VPS of pi1" in problem and "'main' 20000-20001" in problem
    assert "'backup' 20001-20002" in problem and "same_port_everywhere" in problem


def test_an_explicit_port_is_checked_on_every_vps_and_each_clash_named(tmp_path: Path) -> None:
    path = write(tmp_path, TWO + """
      pi0: {address: 10.0.0.9, vps: backup, tunnels: {ssh: {type: ssh, remote_port: 20050}}}
      pi3: {address: 10.0.0.3, vps: main, tunnels: {ssh: {type: ssh, remote_port: 20050}}}
      pi1: {address: 10.0.0.1, vps: [main, backup], tunnels: {ssh: {type: ssh, remote_port: 20050}}}
    """)
    found = problems(path)
    assert len(found) == 2
    assert any("on VPS 'main' is already used by pis.pi3" in p for p in found)
    assert any("on VPS 'backup' is already used by pis.pi0" in p for p in found)


@pytest.mark.parametrize(("vps", "words"), [
    ("[main, nope]", "there is no VPS named 'nope'"),
    ("[main, main]", "main is listed more than once"),
    ("[]", "the list is empty"),
    ("[main, Bad_Name]", "is not a valid name"),
])
def test_a_bad_vps_list_is_one_problem_naming_the_key(tmp_path: Path, vps: str, words: str) -> None:
    path = write(tmp_path, TWO + f"  pi1: {{address: 10.0.0.1, vps: {vps}}}\n")
    [problem] = problems(path)
    assert problem.startswith("pis.pi1.vps line 5:") and words in problem


def test_client_alive_of_each_vps_follows_every_pi_that_uses_it(tmp_path: Path) -> None:
    inv = load_inventory(write(tmp_path, TWO + """
      pi1: {address: 10.0.0.1, vps: [main, backup], keepalive: metered}
    """))
    assert inv.vps["main"].client_alive_interval == inv.vps["backup"].client_alive_interval == 30


def test_the_password_warning_names_the_port_on_every_vps(tmp_path: Path) -> None:
    from pitunnel.roles.pi.sshd import password_warning

    inv = load_inventory(write(tmp_path, TWO + """
      pi0: {address: 10.0.0.9, vps: backup, tunnels: {ssh: {type: ssh, public: true}}}
      pi1: {address: 10.0.0.1, vps: [main, backup], tunnels: {ssh: {type: ssh, public: true}}}
    """))
    pi1 = inv.pis["pi1"]
    warning = password_warning(pi1, inv.vpses_of(pi1), True)
    assert warning is not None
    assert warning.startswith("pi1's sshd is public at 203.0.113.10:20000, 198.51.100.20:20001 and accepts passwords")


def same_port_pi(tmp_path: Path, ranges: tuple[str, str], recorded: dict[str, int] | None, extra: str = "") -> Path:
    """pi1 on main and backup with same_port_everywhere; `recorded`: its ssh port per VPS in the ports file."""
    path = write(tmp_path, f"""
    vps:
      main: {{address: 203.0.113.10, port_range: {ranges[0]}}}
      backup: {{address: 198.51.100.20, port_range: {ranges[1]}}}
    pis:
      pi1: {{address: 10.0.0.1, vps: [main, backup], same_port_everywhere: true, tunnels: {{ssh: {{type: ssh}}}}}}
    """ + extra)
    if recorded is not None:
        ports_file(path).write_text(yaml.safe_dump({v: {"pi1/ssh": p} for v, p in recorded.items()}))
    return path


@pytest.mark.parametrize(("recorded", "port"), [
    ({"main": 20005, "backup": 20005}, 20005),  # recorded alike on both, free and in range: kept
    ({"main": 20009, "backup": 20009}, 20009),  # at the top of the range too
    ({"main": 20005, "backup": 20007}, 20000),  # the VPSes disagree: the lowest free on both
    ({"main": 20050, "backup": 20050}, 20000),  # out of range now: the lowest free on both
    ({"main": 20005}, 20000),  # recorded on one VPS only
], ids=["kept", "top-of-range", "disagree", "out-of-range", "one-vps-only"])
def test_same_port_everywhere_keeps_the_recorded_port_only_when_every_vps_agrees(
        tmp_path: Path, recorded: dict[str, int], port: int) -> None:
    path = same_port_pi(tmp_path, ("[20000, 20009]", "[20000, 20020]"), recorded)
    assert ports(load_inventory(path)) == {"pi1/ssh": {"main": port, "backup": port}}


def test_same_port_everywhere_leaves_a_recorded_port_another_tunnel_holds(tmp_path: Path) -> None:
    path = same_port_pi(tmp_path, ("[20000, 20009]", "[20000, 20009]"), {"main": 20003, "backup": 20003},
                        "  pi0: {address: 10.0.0.9, vps: backup, tunnels: {ssh: {type: ssh, remote_port: 20003}}}\n")
    assert ports(load_inventory(path))["pi1/ssh"] == {"main": 20000, "backup": 20000}


def test_same_port_everywhere_takes_the_last_port_of_the_range_when_it_is_the_one_free(tmp_path: Path) -> None:
    path = same_port_pi(tmp_path, ("[20000, 20002]", "[20001, 20002]"), None,
                        "  pi0: {address: 10.0.0.9, vps: backup, tunnels: {ssh: {type: ssh, remote_port: 20001}}}\n")
    assert ports(load_inventory(path))["pi1/ssh"] == {"main": 20002, "backup": 20002}


def test_same_port_everywhere_without_a_port_says_the_fix_exactly(tmp_path: Path) -> None:
    path = same_port_pi(tmp_path, ("[20000, 20001]", "[20002, 20003]"), None)
    [problem] = problems(path)
    assert problem.endswith("same_port_everywhere: no port is free on every VPS of pi1 (port_range 'main' "
                            "20000-20001, 'backup' 20002-20003) | widen the VPSes' port_range so they overlap, give "
                            "this tunnel an explicit remote_port, or drop same_port_everywhere")
