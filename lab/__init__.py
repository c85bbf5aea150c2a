"""The local lab: a VPS and Pis behind NAT, as Debian hosts booted with systemd on this machine.

A development tool, not part of pitunnel (the wheel does not ship it): it lives in the checkout and
reads its files from there. Lab tests, benchmarks and tasks use only what this module exports; the
modules inside are the lab's own (only unit tests of those modules, in tests/unit, open them).

    lab.up(pis=2)                       boot the lab, write INVENTORY (inventory/lab.yml)
    lab.up(pis=1, vpses=2)              ... with a second VPS (vps2, 198.18.0.11): each Pi keeps a tunnel to both
    lab.status(), lab.down()            what runs; remove every trace of it
    lab.exec_in("pi1", "hostname")      a shell script inside a host, as root, not over SSH
    lab.netns_argv("vps") + ["wrk", ...] a program of this machine on a host's network
    lab.inject("kill-ssh", "pi1")       a fault, and seconds until the Pi is reachable again
    with lab.away_from_home("pi1"):     the laptop's new connections to the Pi's address go unanswered
    lab.boot_from_seed("pi1", DIR)      pi1 boots a fresh cloud-init image with DIR's enrolment files (pitunnel enroll)
    lab.far_away_inventory("pi1", PATH) the lab's inventory with no address for pi1 (an enrolled Pi), at PATH
    with lab.vps_dropped():             the laptop's new connections to the VPS go unanswered
    with lab.port_dropped(80):          ... to one port of the VPS only (a provider's firewall in front of it)
    lab.start_ca()                      pebble, a real ACME CA, for the VPS's certbot (lab.down stops it)
    lab.https_inventory()               the lab's inventory with HTTPS from it (public_name HTTPS_NAME)
    lab.status_page_inventory()         ... and the VPS's status page: (inventory, user:password file, URL)
"""

from pitunnel.taskkit import LAB_INVENTORY as INVENTORY

from .acme import LabCA, dns_fail, start_ca
from .core import (KNOWN_HOSTS, LAPTOP_KEY, HostStatus, UpReport, boot_from_seed, cpu_seconds, down, exec_in,
                   far_away_inventory, netns_argv, password_file, record, sh, shell_argv, status, up, write_file)
from .inventories import HTTPS_NAME, https_inventory, status_page_inventory
from .faults import (NAMES as FAULTS, PITUNNEL, PortKnocker, Setup, SilentDrop, Target, away_from_home, inject,
                     port_dropped, reachable, target, tunnel_bytes, tunnel_pss_kb, tunnel_rss_kb, powered_off, unplugged,
                     vps_addresses, vps_dropped, vps_power_cut, wait_recovered)
from .plan import LAPTOP_ADDR, VPS_ADDR
from .state import STATE_DIR
from .system import LabError

__all__ = [
    # the lab's files
    "INVENTORY", "KNOWN_HOSTS", "LAPTOP_KEY", "STATE_DIR", "password_file",
    # the lab as a whole
    "HostStatus", "LabError", "UpReport", "boot_from_seed", "down", "far_away_inventory", "status", "up",
    # inside one host
    "cpu_seconds", "exec_in", "netns_argv", "record", "sh", "shell_argv", "write_file",
    # its addresses
    "LAPTOP_ADDR", "VPS_ADDR",
    # the lab's ACME CA (pebble) and its DNS
    "LabCA", "dns_fail", "start_ca", "HTTPS_NAME", "https_inventory", "status_page_inventory",
    # faults and recovery
    "FAULTS", "PITUNNEL", "PortKnocker", "Setup", "SilentDrop", "Target", "away_from_home", "inject", "port_dropped", "reachable",
    "target", "tunnel_bytes", "tunnel_pss_kb", "tunnel_rss_kb", "powered_off", "unplugged", "vps_addresses",
    "vps_dropped", "vps_power_cut", "wait_recovered",
]
