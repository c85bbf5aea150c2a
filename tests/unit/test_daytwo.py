"""Day two without hosts (issue 15): the rotation's and the re-key's state machines from every state, the
key files' parsing on both sides, known_hosts with several keys per host, and the metrics' inventory keys."""

from __future__ import annotations

import itertools
import os
import pwd
import re
import socket
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import paramiko
import pytest

from pitunnel import hostkeys
from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, Listener, load_inventory
from pitunnel.inventory.errors import Invalid
from pitunnel.inventory.values import listen_address
from pitunnel.roles import rekey, rotate
from pitunnel.roles.pi import keys as pi_keys
from pitunnel.roles.vps import keys as vps_keys
from pitunnel.roles.vps.authorized import authorized_keys, parse_authorized_keys
from pitunnel.roles.vps.metrics import metrics_ops
from pitunnel.roles.vps.role import VPS_DEFAULTS
from pitunnel.roles.rotate import Ring, Step, after, next_step, plan
from pitunnel.sshkeys import parse_public_key

OLD, NEW, OTHER = "SHA256:old", "SHA256:new", "SHA256:other"


# ------------------------------------------------------------------------------------------ rotation
def reachable_states() -> list[Ring]:
    """Every state a rotation passes through, from a working tunnel, and what an interruption can leave
    around each step (the live session down or on either key)."""
    ring = Ring(OLD, None, None, (OLD,), (OLD, OLD))
    states = [ring]
    for step, _ in plan(ring)[:-1]:
        ring = after(ring, step)
        states.append(ring)
    variants = []
    for s in states:
        for live in ((s.current or "", s.current or ""), (s.old or s.current or "",) * 2, ("", "")):
            if all(k in s.authorised or k == "" for k in live):  # a session's key was accepted when it logged in
                variants.append(Ring(s.current, s.next, s.old, s.authorised, live))
    return variants


def test_a_rotation_from_a_working_tunnel_takes_six_steps_in_order() -> None:
    steps = [s for s, _ in plan(Ring(OLD, None, None, (OLD,), (OLD, OLD)))]
    assert steps == [Step.MAKE, Step.AUTHORISE, Step.SWITCH, Step.CONNECT, Step.RETIRE_VPS, Step.RETIRE_PI, Step.DONE]


@pytest.mark.parametrize("ring", reachable_states(), ids=str)
def test_from_every_state_a_rerun_finishes_and_the_tunnel_key_is_always_accepted(ring: Ring) -> None:
    """The invariant behind "no moment without a working tunnel": at every state on the way, the key the
    Pi's config names is accepted by the VPS, and so is the key of a live session."""
    started = ring.in_progress
    for _ in range(10):
        assert ring.current in ring.authorised or ring.current == rotate.NEW
        assert all(k in ring.authorised or k in ("", "?") for k in ring.live)
        step, _ = next_step(ring, started=started)
        if step is Step.DONE:
            break
        if step is Step.REFUSED:  # only a rotation not yet begun, from a tunnel that is not up
            assert not started and ring.up_with != ring.current
            return
        started, ring = True, after(ring, step)
    else:
        pytest.fail("no end")
    assert ring.authorised == (ring.current,) and ring.next is None and ring.old is None


def test_a_pi_with_two_vpses_switches_only_once_both_accept_the_new_key() -> None:
    """One tunnel key for both VPSes: authorised on both before the switch, retired from both at the end;
    killed after the new key reached one VPS only, a rerun authorises it on the other first."""
    two = Ring(OLD, None, None, (OLD,), (OLD, OLD, OLD, OLD), everywhere=(OLD,))
    steps = [s for s, _ in plan(two)]
    assert steps == [Step.MAKE, Step.AUTHORISE, Step.SWITCH, Step.CONNECT, Step.RETIRE_VPS, Step.RETIRE_PI, Step.DONE]
    on_one = Ring(OLD, NEW, None, (OLD, NEW), (OLD,) * 4, everywhere=(OLD,))
    assert next_step(on_one, started=True)[0] is Step.AUTHORISE
    assert next_step(after(on_one, Step.AUTHORISE), started=True)[0] is Step.SWITCH
    # the second VPS's listeners still held by the old key: not done connecting
    half = Ring(NEW, None, OLD, (OLD, NEW), (NEW, NEW, OLD, OLD), everywhere=(OLD, NEW))
    assert next_step(half, started=True)[0] is Step.CONNECT
    # the old key still accepted by one VPS once both are up with the new one: retired there too
    left = Ring(NEW, None, OLD, (NEW, OLD), (NEW,) * 4, everywhere=(NEW,))
    assert next_step(left, started=True)[0] is Step.RETIRE_VPS
    assert after(left, Step.RETIRE_VPS).accepted == (NEW,) == after(left, Step.RETIRE_VPS).authorised
    # a VPS that does not accept the key in use: nothing starts
    assert next_step(Ring(OLD, None, None, (OLD,), (OLD, ""), everywhere=()), started=False)[0] is Step.REFUSED


def test_a_rerun_finishes_an_interrupted_rotation_and_does_not_start_another() -> None:
    interrupted = Ring(NEW, None, OLD, (NEW,), (NEW,))
    assert [s for s, _ in plan(interrupted, started=True)] == [Step.RETIRE_PI, Step.DONE]


@pytest.mark.parametrize(("ring", "why"), [
    (Ring(None, None, None, (), ("",)), "provision-pi"),
    (Ring(OLD, None, None, (), (OLD,)), "does not accept"),
    (Ring(OLD, None, None, (OLD,), ("",)), "not up with its key"),
    (Ring(OLD, None, None, (OLD,), ("?",)), "not up with its key"),
])
def test_a_rotation_starts_only_from_a_working_provisioned_tunnel(ring: Ring, why: str) -> None:
    step, reason = next_step(ring, started=False)
    assert step is Step.REFUSED and why in reason


def test_a_key_left_authorised_by_another_way_is_retired_once_the_tunnel_uses_its_key() -> None:
    assert next_step(Ring(NEW, None, None, (OTHER, NEW), (NEW,)), started=False)[0] is Step.RETIRE_VPS
    # ... but not while the live session may be the other key's
    assert next_step(Ring(NEW, None, None, (OTHER, NEW), (OTHER,)), started=False)[0] is Step.REFUSED


def test_connect_is_needed_until_every_listener_is_held_by_the_new_key() -> None:
    ring = Ring(NEW, None, OLD, (OLD, NEW), (NEW, OLD))
    assert ring.up_with is None and next_step(ring, started=True)[0] is Step.CONNECT
    assert Ring(NEW, None, OLD, (OLD, NEW), (NEW, NEW)).up_with == NEW


# ------------------------------------------------------------------------------------------ key files
def a_key(comment: str = "pitunnel:pi1") -> str:
    return f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHva6ee4ekTAawH0SqI5CoAvuEvPaN4hfyg5Q+vEb9p1 {comment}"


SECOND = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBw2Yf4gkV7VCy2SEDKQ4vfN2mJOuBqk8n9xBhRMW3nB"


def test_the_pis_keys_are_read_from_their_private_halves() -> None:
    keys = pi_keys._derived(f"current {a_key()}\nnext -\nold garbage-not-a-key\n")
    assert keys.current is not None and keys.current.fingerprint.startswith("SHA256:")
    assert keys.next is None and keys.old is None


def test_the_vps_reads_which_key_holds_each_listener() -> None:
    asked = [Listener(True, 12346), Listener(False, 20001), Listener(False, 20002)]
    assert vps_keys._live("0.0.0.0:12346 SHA256:abc\n127.0.0.1:20001\n127.0.0.1:20002 SHA256:a SHA256:b\n", asked) == {
        Listener(True, 12346): "SHA256:abc", Listener(False, 20001): "", Listener(False, 20002): "?"}


def test_two_keys_of_a_pi_are_kept_with_the_same_restrictions(tmp_path: Path) -> None:
    inv = lab_like(tmp_path)
    vps = inv.vps["main"]
    op = authorized_keys(inv, vps, {"pi1": [a_key(), SECOND]})
    text = op.wanted(FileState(False))
    lines = text.splitlines()
    assert len(lines) == 2 and lines[0].split()[0] == lines[1].split()[0], "the same options on both"
    assert 'permitlisten="0.0.0.0:12346"' in lines[0] and lines[1].endswith("pitunnel:pi1")
    assert parse_authorized_keys(text) == {"pi1": [" ".join(a_key().split()[:2]), SECOND]}
    # provision-vps keeps both; provision-pi's single key replaces them
    kept = authorized_keys(inv, vps, {}).wanted(FileState(True, content=text.encode()))
    assert kept == text
    one = authorized_keys(inv, vps, {"pi1": SECOND}).wanted(FileState(True, content=text.encode()))
    assert parse_authorized_keys(one) == {"pi1": [SECOND]}


def lab_like(tmp_path: Path, vps_extra: str = "") -> Inventory:
    (tmp_path / "inv.yml").write_text(f"""settings: {{known_hosts: {tmp_path}/kh, laptop_key: null}}
vps:
  main: {{address: 198.18.0.10{vps_extra}}}
pis:
  pi1:
    address: 198.19.1.2
    tunnels: {{ssh: {{type: ssh, remote_port: 12346, public: true}}}}
""")
    return load_inventory(tmp_path / "inv.yml", save_allocations=False)


# ------------------------------------------------------------------------------------------ known_hosts
def test_known_hosts_with_two_keys_per_host_and_rewrites(tmp_path: Path) -> None:
    kh = tmp_path / "known_hosts"
    first = " ".join(a_key().split()[:2])
    kh.write_text(f"other.example {first}\n[198.18.0.10]:12345 {first}\n")
    hostkeys.rewrite(kh, "[198.18.0.10]:12345", keep=lambda k: True, add=[SECOND])
    assert hostkeys.known_lines(kh, "[198.18.0.10]:12345") == [f"[198.18.0.10]:12345 {first}",
                                                                f"[198.18.0.10]:12345 {SECOND}"]
    key = paramiko.PKey.from_type_string("ssh-ed25519", __import__("base64").b64decode(SECOND.split()[1]))
    assert hostkeys.listed(kh, "[198.18.0.10]:12345", key) and not hostkeys.listed(kh, "other.example", key)
    hostkeys.rewrite(kh, "[198.18.0.10]:12345", keep=lambda k: k == SECOND, add=[SECOND])
    assert kh.read_text() == f"other.example {first}\n[198.18.0.10]:12345 {SECOND}\n", "other hosts untouched"


def test_hashed_known_hosts_names_match(tmp_path: Path) -> None:
    hashed = paramiko.HostKeys.hash_host("[198.18.0.10]:12345")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{hashed} {SECOND}\n")
    assert hostkeys.known_lines(kh, "[198.18.0.10]:12345") and not hostkeys.known_lines(kh, "198.18.0.10")


# ------------------------------------------------------------------------------------------ re-key
def test_a_planned_rekey_pins_before_it_switches_and_unpins_after() -> None:
    state = rekey.Rekey(frozenset({"a"}), None, (frozenset({"a"}), frozenset({"a"})), frozenset({"a"}))
    steps, started = [], False
    for _ in range(8):
        step, _ = rekey.next_step(state, started=started)
        steps.append(step)
        if step is rekey.Step.DONE:
            break
        if step is rekey.Step.SWITCH:  # the switch only when every Pi and the laptop accept the new keys
            assert state.staged is not None and all(state.staged <= p for p in state.pins)
            assert state.staged <= state.laptop
        state, started = rekey.after(state, step), True
    assert steps == [rekey.Step.STAGE, rekey.Step.PIN_BOTH, rekey.Step.SWITCH, rekey.Step.UNPIN_OLD,
                     rekey.Step.CLEAN, rekey.Step.DONE]


@pytest.mark.parametrize("pins", list(itertools.product([frozenset({"a"}), frozenset({"a", "b"}), frozenset({"b"})],
                                                        repeat=2)))
def test_a_rekey_interrupted_anywhere_switches_only_when_all_pin_the_new_keys(pins: tuple[frozenset[str], ...]) -> None:
    before = rekey.Rekey(frozenset({"a"}), frozenset({"b"}), pins, frozenset({"a", "b"}))
    step, _ = rekey.next_step(before, started=True)
    assert (step is rekey.Step.SWITCH) == all("b" in p for p in pins)
    after_switch = rekey.Rekey(frozenset({"b"}), frozenset({"b"}), pins, frozenset({"a", "b"}))
    assert rekey.next_step(after_switch, started=True)[0] is rekey.Step.UNPIN_OLD


def test_a_rekey_is_refused_when_the_inventory_pins_the_vps() -> None:
    state = rekey.Rekey(frozenset({"a"}), None, (), frozenset({"a"}))
    step, why = rekey.next_step(state, started=False, pinned_in_inventory=True)
    assert step is rekey.Step.REFUSED and "host_key" in why


def test_staged_host_keys_are_read() -> None:
    found = vps_keys._host_keys(f"cur {SECOND} root@vps\nSTAGED\nnew {' '.join(a_key().split()[:2])} root@vps\n")
    assert found.current == (SECOND,) and found.staged == (" ".join(a_key().split()[:2]),)
    assert vps_keys._host_keys(f"cur {SECOND}\n").staged is None


# ------------------------------------------------------------------------------------------ metrics
@pytest.mark.parametrize("given", ["127.0.0.1:9100", "198.18.0.10:9100"])
def test_metrics_address_accepts_an_ipv4_address_and_port(given: str) -> None:
    assert listen_address(given) == given


@pytest.mark.parametrize("given", ["localhost:9100", "127.0.0.1", "127.0.0.1:99999", ":9100", "1.2.3.4:x"])
def test_metrics_address_refuses_anything_else(given: str) -> None:
    with pytest.raises(Invalid):
        listen_address(given)


def test_metrics_on_renders_the_tunnels_and_the_bind(tmp_path: Path) -> None:
    inv = lab_like(tmp_path, ", metrics: true, metrics_address: 198.18.0.10:9100")
    ops = metrics_ops(inv, inv.vps["main"])
    texts = {getattr(op, "path", ""): op.wanted(FileState(False)) for op in ops if hasattr(op, "wanted")}
    dropin = next(t for p, t in texts.items() if p.endswith("pitunnel.conf"))
    assert "--web.listen-address=198.18.0.10:9100" in dropin and "--collector.textfile.directory=" in dropin
    script = next(t for p, t in texts.items() if p.endswith("/metrics"))
    assert "'pi1 ssh 0.0.0.0:12346'" in script and "pitunnel_reaper_sessions_ended_total" in script
    off = metrics_ops(lab_like(tmp_path), lab_like(tmp_path).vps["main"])
    assert not any(hasattr(op, "wanted") for op in off), "metrics off: only removals"


def test_the_metrics_writer_script_root_runs_is_root_s_alone_to_change(tmp_path: Path) -> None:
    """The writer runs as root every minute: its script is root's and 755, never writable by anyone else (494, the
    decimal slip, would be 0o756: a script any account on the VPS could rewrite, and root would run it)."""
    inv = lab_like(tmp_path, ", metrics: true")
    (script,) = [op for op in metrics_ops(inv, inv.vps["main"])
                 if getattr(op, "path", "") == VPS_DEFAULTS["metrics_path"]]
    assert (script.owner, script.group, oct(script.mode)) == ("root", "root", "0o755")


# ------------------------------------------------------------------------------------------ --laptop-key
def test_a_new_laptop_key_is_checked_before_any_host(tmp_path: Path) -> None:
    from pitunnel.tasks import laptop_key_problem

    key = tmp_path / "new"
    assert "needs the private key" in (laptop_key_problem(key) or "")
    key.write_text("private\n")
    key.chmod(0o600)
    assert "needs the private key" in (laptop_key_problem(key) or "")
    key.with_name("new.pub").write_text("not a key\n")
    assert "is not a public key" in (laptop_key_problem(key) or "")
    key.with_name("new.pub").write_text(SECOND + " me@laptop\n")
    assert laptop_key_problem(key) is None
    key.chmod(0o644)
    assert "chmod 600" in (laptop_key_problem(key) or "")


def test_the_laptop_key_goes_new_beside_old_then_new_alone() -> None:
    from pitunnel import reconcile
    from pitunnel.roles import laptopkey

    def plan(keys: tuple[str, ...]) -> list[laptopkey.Step]:
        return [s for s, _ in reconcile.plan(keys, lambda k, _: laptopkey.next_step(k, "new"),
                                             lambda k, s: laptopkey.after(k, s, "new"))]

    Step = laptopkey.Step
    assert plan(("old",)) == [Step.ADD, Step.SWAP, Step.DONE]
    assert plan(("old", "new")) == plan(("new", "old")) == [Step.SWAP, Step.DONE]  # the old goes only after a login
    assert plan(()) == [Step.ADD, Step.DONE] and plan(("new",)) == [Step.DONE]


def test_laptop_keys_keep_the_users_own_lines() -> None:
    from pitunnel.inventory import PiSpec

    pi = PiSpec(name="pi1", role="pi", address="a", port=22, user="pi", key=None, password_file=None,
                sudo_password_file=None, host_key=None, connect_timeout=5, vpses=("main",))
    old = " ".join(a_key().split()[:2])
    text = f"ssh-rsa AAAAmine me@home\n{old} pitunnel-laptop\n"
    assert pi_keys.laptop_keys(text) == [old]
    both = pi_keys.laptop_keys_op(pi, [old, SECOND]).wanted(FileState(True, content=text.encode()))
    assert both.splitlines() == ["ssh-rsa AAAAmine me@home", f"{old} pitunnel-laptop", f"{SECOND} pitunnel-laptop"]
    only = pi_keys.laptop_keys_op(pi, [SECOND]).wanted(FileState(True, content=both.encode()))
    assert only.splitlines() == ["ssh-rsa AAAAmine me@home", f"{SECOND} pitunnel-laptop"]


# ------------------------------------------------------------------------------------------ the reaper
def test_the_reaper_sees_a_pis_two_keys_as_one_owner(tmp_path: Path) -> None:
    """While rotate-keys runs a Pi has two lines (one `pitunnel:NAME` comment): the reaper's bash treats
    either key's stale session as that Pi's, and never another Pi's."""
    import subprocess

    from pitunnel.roles.vps.role import ROLE

    fps, lines = [], []
    for name, owner in (("a", "pi1"), ("b", "pi1"), ("c", "pi2")):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
        pub = (tmp_path / f"{name}.pub").read_text().split()
        lines.append(f'restrict,port-forwarding,permitlisten="0.0.0.0:12346",command="/bin/false" {pub[0]} {pub[1]} '
                     f"pitunnel:{owner}")
        fps.append(parse_public_key(" ".join(pub[:2])).fingerprint)
    (tmp_path / "authorized_keys").write_text("\n".join(lines) + "\n")
    script = ROLE.render("reaper.sh.j2")
    functions = script[script.index("owner_of() {"):script.index("reap() {")]
    probe = (f'keys={tmp_path}/authorized_keys\n{functions}\n'
             'for pair in "$1 $2" "$1 $3" "$2 $3" "$1 SHA256:unknown"; do same_pi $pair && echo same || echo other; done\n'
             'owner_of "$3"')
    run = subprocess.run(["bash", "-c", probe, "probe", *fps], capture_output=True, text=True, timeout=20)
    assert run.stdout.splitlines() == ["same", "other", "other", "other", "pitunnel:pi2"], run.stderr


def test_the_metrics_writer_gives_each_certificates_expiry_and_the_minute_it_wrote(tmp_path: Path) -> None:
    """The writer script as rendered, run here for a moment: a certificate it can read gives its notAfter, one
    it cannot (ACME not done yet) gives no series, and the file carries the minute it was written."""
    cert = tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(cert), "-days", "20", "-subj", "/CN=vps.example.com"], check=True, capture_output=True)
    not_after = subprocess.run(["openssl", "x509", "-enddate", "-noout", "-in", str(cert)], capture_output=True,
                               text=True, check=True).stdout.strip().removeprefix("notAfter=")
    expires = int(datetime.strptime(not_after, "%b %d %H:%M:%S %Y GMT").replace(tzinfo=timezone.utc).timestamp())
    inv = lab_like(tmp_path, ", metrics: true")
    ops = metrics_ops(inv, inv.vps["main"], [("vps.example.com", str(cert)), ("path-prefix server", str(tmp_path / "no such.pem"))])
    script = next(op.wanted(FileState(False)) for op in ops if getattr(op, "path", "").endswith("/metrics"))
    (tmp_path / "run").mkdir()
    (tmp_path / "metrics.sh").write_text(script.replace(VPS_DEFAULTS["metrics_textfile_dir"], str(tmp_path)))
    before = int(time.time()) // 60 * 60
    subprocess.run(["timeout", "3", "bash", str(tmp_path / "metrics.sh")], env={**os.environ, "RUNTIME_DIRECTORY": str(tmp_path / "run")})
    text = (tmp_path / "pitunnel.prom").read_text()
    assert f'pitunnel_certificate_expiry_seconds{{vps="main",name="vps.example.com"}} {expires}\n' in text
    assert text.count("pitunnel_certificate_expiry_seconds{") == 1  # none for the file it cannot read
    (written,) = re.findall(r'^pitunnel_metrics_updated_seconds\{vps="main"\} (\d+)$', text, re.M)
    assert before <= int(written) <= int(time.time()) and int(written) % 60 == 0


@pytest.mark.parametrize(("owner", "up"), [("", "1"), ("nobody", "0")])
def test_the_metrics_writer_counts_a_forward_up_only_while_the_tunnel_account_holds_it(
        tmp_path: Path, owner: str, up: str) -> None:
    """The writer as rendered, run here for a moment, with a listener on the tunnel's address held by this test:
    up when the test's user is the tunnel account, down when it is another's (a process that took the port
    while the Pi was away is not the Pi: a lab test once saw such a listener shown as the tunnel, up)."""
    if owner == "nobody" and os.getuid() == pwd.getpwnam("nobody").pw_uid:
        pytest.skip("this test runs as nobody")
    inv = lab_like(tmp_path, ", metrics: true")
    script = next(op.wanted(FileState(False)) for op in metrics_ops(inv, inv.vps["main"])
                  if getattr(op, "path", "").endswith("/metrics"))
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    assert "tunnel_uid=$(id -u pitunnel 2>/dev/null)" in script and "'pi1 ssh 0.0.0.0:12346'" in script
    script = (script.replace(VPS_DEFAULTS["metrics_textfile_dir"], str(tmp_path))
              .replace("'pi1 ssh 0.0.0.0:12346'", f"'pi1 ssh 127.0.0.1:{port}'")
              .replace("id -u pitunnel", f"id -u {owner}".rstrip()))
    (tmp_path / "run").mkdir()
    (tmp_path / "metrics.sh").write_text(script)
    try:
        subprocess.run(["timeout", "2", "bash", str(tmp_path / "metrics.sh")],
                       env={**os.environ, "RUNTIME_DIRECTORY": str(tmp_path / "run")})
    finally:
        held.close()
    text = (tmp_path / "pitunnel.prom").read_text()
    assert f'pitunnel_tunnel_up{{pi="pi1",tunnel="ssh",vps="main"}} {up}\n' in text, text
    assert ("pitunnel_tunnel_connected_since_seconds{" in text) == (up == "1")
