"""Unit tests for lab.plan: the lab's address plan and the route clash check (pure)."""

from __future__ import annotations

import ipaddress

import pytest

from lab.plan import (BRIDGE_PREFIX, INET_BRIDGE, INTERNET, LAB_RANGE, LAPTOP_ADDR, MAX_PIS, VPS_ADDR,
                               VPS_SSH_PORT, clashes, make_plan)


def all_addresses(plan) -> list[ipaddress.IPv4Address]:  # type: ignore[no-untyped-def]
    found = [LAPTOP_ADDR]
    for host in plan.hosts:
        found += [host.address, host.gateway, host.public_address]
    for home in plan.homes:
        found += [home.router, home.public_address]
    return found


@pytest.mark.parametrize("pis", [1, 2, 7, MAX_PIS])
def test_everything_inside_the_lab_range(pis: int) -> None:
    plan = make_plan(pis)
    assert LAB_RANGE == ipaddress.ip_network("198.18.0.0/15")
    for address in all_addresses(plan):
        assert address in LAB_RANGE, address
    for network in plan.networks:
        assert network.subnet_of(LAB_RANGE), network
    for host in plan.hosts:
        assert ipaddress.ip_interface(f"{host.address}/{host.prefix}").network in plan.networks
        assert host.gateway in ipaddress.ip_interface(f"{host.address}/{host.prefix}").network


@pytest.mark.parametrize("pis", [1, 3, MAX_PIS])
def test_addresses_names_and_networks_unique(pis: int) -> None:
    plan = make_plan(pis)
    assert len(plan.pis) == pis and len(plan.homes) == pis
    host_addresses = [h.address for h in plan.hosts]
    assert len(set(host_addresses)) == len(host_addresses)
    publics = [h.public_address for h in plan.hosts]
    assert len(set(publics)) == len(publics)  # the VPS tells the Pis apart by source address
    routers = [home.router for home in plan.homes]
    assert len(set(routers + host_addresses + [LAPTOP_ADDR])) == len(routers) + len(host_addresses) + 1
    names = [h.name for h in plan.hosts]
    assert len(set(names)) == len(names)
    assert [p.name for p in plan.pis] == [f"pi{i}" for i in range(1, pis + 1)]
    veths = [h.veth for h in plan.hosts]
    assert len(set(veths)) == len(veths) and all(len(v) <= 15 for v in veths)
    bridges = plan.bridges
    assert len(set(bridges)) == len(bridges)
    assert all(b.startswith(BRIDGE_PREFIX) and len(b) <= 15 for b in bridges)


@pytest.mark.parametrize("pis", [2, 10, MAX_PIS])
def test_homes_are_distinct_and_disjoint(pis: int) -> None:
    plan = make_plan(pis)
    networks = [home.network for home in plan.homes]
    assert len(set(networks)) == pis
    for i, a in enumerate(networks):
        assert not a.overlaps(INTERNET)
        for b in networks[i + 1:]:
            assert not a.overlaps(b)
    for pi, home in zip(plan.pis, plan.homes):
        assert pi.bridge == home.bridge
        assert pi.gateway == home.router
        assert pi.address in home.network and home.router in home.network
        assert pi.public_address == home.public_address
        assert home.public_address in INTERNET  # the home router's address on the internet segment
        assert pi.ssh_port == 22 and pi.role == "pi"


def test_vps_plan() -> None:
    vps = make_plan(1).vps
    assert vps.name == "vps" and vps.role == "vps"
    assert vps.address == VPS_ADDR and vps.public_address == VPS_ADDR
    assert vps.gateway == LAPTOP_ADDR and vps.bridge == INET_BRIDGE
    assert vps.prefix == INTERNET.prefixlen
    assert vps.ssh_port == VPS_SSH_PORT != 22


@pytest.mark.parametrize("pis", [0, -1, MAX_PIS + 1, 1000])
def test_pis_out_of_bounds(pis: int) -> None:
    with pytest.raises(ValueError, match=f"from 1 to {MAX_PIS}"):
        make_plan(pis)


def test_host_lookup() -> None:
    plan = make_plan(2)
    assert plan.host("pi2") is plan.pis[1]
    assert plan.host("vps") is plan.vps
    with pytest.raises(KeyError, match="pi3"):
        plan.host("pi3")


def test_clashes_detects_overlapping_routes() -> None:
    plan = make_plan(2)
    routes = [
        ("198.18.5.0/24", "eth0"),      # inside the range
        ("198.19.1.7", "wlan0"),        # a host address in a home network
        ("198.16.0.0/12", "tun0"),      # a wider route covering the range
        ("198.18.0.0/15", "docker0"),   # the same range
    ]
    assert clashes(plan, routes) == ["198.18.5.0/24 dev eth0", "198.19.1.7 dev wlan0", "198.16.0.0/12 dev tun0",
                                     "198.18.0.0/15 dev docker0"]


def test_clashes_ignores_default_ours_others_and_junk() -> None:
    plan = make_plan(2)
    routes = [
        ("default", "eth0"),
        ("198.18.0.0/24", INET_BRIDGE),
        ("198.19.1.0/24", "pt-home1"),
        ("10.0.0.0/8", "eth0"),
        ("192.168.1.0/24", "wlan0"),
        ("198.20.0.0/16", "eth0"),       # just above the range
        ("198.17.255.0/24", "eth0"),     # just below
        ("fe80::/64", "eth0"),
        ("2001:db8::/32", "eth0"),
        ("not-an-address", "eth0"),
    ]
    assert clashes(plan, routes) == []
    assert clashes(plan, []) == []


def test_lab_fault_help_names_every_fault() -> None:
    from lab import FAULTS
    from lab.tasks import lab_fault

    text = lab_fault.help["fault"]
    assert all(name in text for name in FAULTS), [n for n in FAULTS if n not in text]


def test_inotify_limit_raised_only_as_far_as_the_hosts_need() -> None:
    from lab.limits import PER_HOST, SLACK, inotify_limit_needed

    assert inotify_limit_needed(in_use=10, hosts=3, limit=128) is None  # a small lab fits Debian's default
    wanted = inotify_limit_needed(in_use=10, hosts=21, limit=128)  # 20 Pis and the VPS do not
    assert wanted == 10 + 21 * PER_HOST + SLACK and wanted > 128
    assert inotify_limit_needed(in_use=10, hosts=21, limit=4096) is None  # never lowered


def test_a_second_vps_has_its_own_address_on_the_internet_segment() -> None:
    plan = make_plan(1, vpses=2)
    assert [v.name for v in plan.vpses] == ["vps", "vps2"] and plan.vps is plan.vpses[0]
    assert [str(v.address) for v in plan.vpses] == ["198.18.0.10", "198.18.0.11"]
    assert all(v.bridge == INET_BRIDGE and v.role == "vps" and v.ssh_port == VPS_SSH_PORT for v in plan.vpses)
    assert [h.name for h in plan.hosts] == ["vps", "vps2", "pi1"]
    assert len({h.address for h in plan.hosts}) == len(plan.hosts)
    with pytest.raises(ValueError, match="--vpses"):
        make_plan(1, vpses=3)
