"""What two tasks make of their results before printing (pitunnel/tasks.py): `verify --json`'s document, and
revoke's check of the name it was given (a Pi of the inventory, revoked or not; one revoked and gone; none)."""

from __future__ import annotations

from pathlib import Path

import pytest
from invoke import Exit

from pitunnel import tasks
from pitunnel.inventory import Inventory, Revoked
from pitunnel.roles.probes.report import PathReport
from tests.unit.fake_hosts import load
from tests.unit.test_revoke import record
from tests.unit.test_site import INVENTORY


def test_verify_json_has_each_pi_passed_only_if_every_path_passed_and_every_check_in_full() -> None:
    main, spare, beta = PathReport("alpha", vps="main"), PathReport("alpha", vps="spare"), PathReport("beta", vps="main")
    main.add("ssh", True, "lands on alpha")
    main.add("http", True, "200", warning=True, hint="slow")
    spare.add("ssh", False, "refused", "start the tunnel")
    beta.add("ssh", True, "lands on beta")
    doc = tasks.verify_document([main, spare, beta])
    assert doc == {
        "alpha": {"passed": False, "paths": [
            {"vps": "main", "passed": True, "checks": [
                {"name": "ssh", "passed": True, "warning": False, "detail": "lands on alpha", "hint": ""},
                {"name": "http", "passed": True, "warning": True, "detail": "200", "hint": "slow"}]},
            {"vps": "spare", "passed": False, "checks": [
                {"name": "ssh", "passed": False, "warning": False, "detail": "refused", "hint": "start the tunnel"}]}]},
        "beta": {"passed": True, "paths": [
            {"vps": "main", "passed": True, "checks": [
                {"name": "ssh", "passed": True, "warning": False, "detail": "lands on beta", "hint": ""}]}]}}
    assert tasks.verify_document([]) == {}


def test_revoke_takes_a_pi_of_the_inventory_revoked_already_or_not(tmp_path: Path) -> None:
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z"))
    inv = load(tmp_path, INVENTORY)
    assert "alpha" in inv.shut and "beta" in inv.pis
    tasks.vet_revoke(inv, "alpha")  # revoked, still in the inventory: a rerun
    tasks.vet_revoke(inv, "beta")


def refused(inv: Inventory, pi: str) -> str:
    """What `revoke PI` says when it refuses the name (exit 3, before any host)."""
    with pytest.raises(Exit) as caught:
        tasks.vet_revoke(inv, pi)
    assert caught.value.code == 3
    return str(caught.value.message)


def test_revoke_of_a_pi_revoked_and_gone_points_to_release_ports(tmp_path: Path) -> None:
    record(tmp_path, Revoked("delta", "2026-12-06T05:00:00Z"))
    inv = load(tmp_path, INVENTORY)
    assert refused(inv, "delta") == (f"revoke: delta is revoked (since 2026-12-06T05:00:00Z) and gone from {inv.path}: "
                                     "nothing of it is left on its VPSes. Fix: to free its ports, "
                                     "`pitunnel revoke delta --release-ports`")


def test_revoke_of_an_unknown_name_lists_the_pis_revoked_ones_too_or_says_none(tmp_path: Path) -> None:
    record(tmp_path, Revoked("alpha", "2026-12-06T05:00:00Z"))
    inv = load(tmp_path, INVENTORY)
    assert refused(inv, "zeta") == (f"revoke: no Pi named 'zeta' in {inv.path} (its Pis: beta, gamma, alpha). "
                                    "Fix: give the name of one of them")
    (tmp_path / "empty").mkdir()
    empty = load(tmp_path / "empty", "vps:\n  main: {address: 203.0.113.1}\n")
    assert refused(empty, "zeta") == (f"revoke: no Pi named 'zeta' in {empty.path} (its Pis: none). "
                                      "Fix: give the name of one of them")


def test_the_json_document_has_per_host_counts_and_error_and_says_whether_the_run_was_interrupted(
        tmp_path: Path) -> None:
    import io
    import json

    from pitunnel.play import Options, Play
    from pitunnel.report import Reporter

    play = Play(load(tmp_path, INVENTORY), Options(), Reporter(colour=False, out=io.StringIO()))
    play.reporter.line("main", "changed", "a step")
    play.reporter.line("alpha", "failed", "a step", "it broke")
    play.why["alpha"] = "it broke"
    text = tasks._document("provision", play, 2, tunnels=[])
    assert text.startswith('{\n  "task": "provision",\n  "exit_code": 2,\n  "interrupted": false,\n')  # indented 2
    doc = json.loads(text)
    assert doc["hosts"]["main"]["changed"] == 1 and doc["hosts"]["main"]["error"] is None
    assert doc["hosts"]["alpha"]["failed"] == 1 and doc["hosts"]["alpha"]["error"] == "it broke"
    assert doc["tunnels"] == []
    assert json.loads(tasks._document("status", None, 130))["interrupted"] is True
    assert json.loads(tasks._document("status", None, 130))["hosts"] == {}


def test_loading_says_which_inventory_which_ports_are_not_recorded_which_names_go_plain_and_who_is_revoked(
        tmp_path: Path) -> None:
    import io

    from pitunnel import taskkit
    from tests.unit.test_revoke import AUTO

    record(tmp_path, Revoked("beta", "2026-12-06T05:00:00Z"))
    text = AUTO.replace("path: /alpha/}", "server_name: cam.example.com}")
    (tmp_path / "hosts.yml").write_text(text.lstrip())
    out = io.StringIO()
    inv = taskkit.load(str(tmp_path / "hosts.yml"), check=False, out=out, record=False)
    assert "beta" in inv.shut and not (tmp_path / "hosts.ports.yml").exists()  # record=False: nothing written
    assert out.getvalue().splitlines() == [
        f"inventory: {tmp_path / 'hosts.yml'} (from -i)",
        f"ports: auto ports not recorded yet (alpha/ssh@main, alpha/web@main, beta/ssh@main); a provisioning run "
        f"records them in "
        f"{tmp_path / 'hosts.ports.yml'}",
        "WARNING: alpha/web: cam.example.com is served over plain HTTP by main, which has neither `acme:` for it nor "
        "tls_certificate. Fix: give vps.main `acme: {email: ...}` (docs/https.md; a wildcard name needs "
        "tls_certificate and tls_key)",
        "revoked: beta (since 2026-12-06T05:00:00Z) is left out of this run; to bring it back, provision-pi --limit "
        "beta once it has a new key (docs/operations.md)"]


@pytest.mark.parametrize(("verbose", "shown", "handshake"), [(0, False, False), (1, True, False), (2, True, True),
                                                             (3, True, True)])
def test_v_shows_output_and_vv_the_handshake_too(verbose: int, shown: bool, handshake: bool) -> None:
    from pitunnel.taskkit import Flags

    options = Flags(verbose=verbose, forks=5, limit=" pi1, ,main ", accept_changed_host_key=" SHA256:x ").options()
    assert (options.verbose, options.ssh_debug, options.forks) == (shown, handshake, 5)
    assert options.limit == {"pi1", "main"} and options.accept_changed_host_key == "SHA256:x"


def test_the_flags_own_mistakes_in_full() -> None:
    from pitunnel.taskkit import Flags

    assert Flags(forks=1).problem() is None  # one host at a time is allowed
    assert Flags(forks=0).problem() == "--forks 0: at least 1 host at a time. Fix: --forks N with N >= 1 (default 32)"
    assert Flags(accept_changed_host_key="SHA256:short").problem() == (
        "-k/--accept-changed-host-key 'SHA256:short' is not a SHA256 fingerprint. Fix: give the host's new key's "
        "fingerprint as `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints it on its console (SHA256: and 43 "
        "characters)")
