"""roles/vps/acme.py against certbot's files for real: the facts' scripts and the plans' commands run in sh on a
folder laid out as certbot and pitunnel leave a VPS (/etc/letsencrypt and pitunnel's state folder moved under a
temporary folder, openssl scripted), so each test states which files a teardown leaves and what the run says."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pitunnel.facts import Fact, Facts
from pitunnel.inventory import Inventory, load_inventory
from pitunnel.ops import Op
from pitunnel.roles.vps import acme
from tests.unit.test_https_config import INVENTORY, write

LE, STATE = "/etc/letsencrypt", "/var/lib/pitunnel-state"
NOT_AFTER = "Jan  1 00:00:00 2031 GMT"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    return load_inventory(write(tmp_path, INVENTORY), save_allocations=False)


class Vps:
    """A folder standing for the VPS's filesystem: certbot's and pitunnel's folders under it, openssl scripted."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "vps"
        self.bin = tmp / "bin"
        self.bin.mkdir(parents=True)
        (self.bin / "openssl").write_text(f"#!/bin/sh\n[ -e \"$5\" ] || exit 1\necho 'notAfter={NOT_AFTER}'\n")
        (self.bin / "openssl").chmod(0o755)

    def path(self, where: str) -> Path:
        return self.root / where.lstrip("/")

    def put(self, where: str, text: str = "x\n") -> None:
        self.path(where).parent.mkdir(parents=True, exist_ok=True)
        self.path(where).write_text(text)

    def sh(self, script: str) -> str:
        for real in (LE, STATE, "/etc/ssl"):
            script = script.replace(real, str(self.path(real)))
        done = subprocess.run(["sh", "-ec", script], capture_output=True, text=True,
                              env={"PATH": f"{self.bin}:/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        return done.stdout

    def facts(self, op: Op) -> Facts:
        return Facts({f.key: (0, self.sh(f.script)) for f in op.facts()})

    def apply(self, op: Op) -> tuple[str, list[str]]:
        plan = op.plan(self.facts(op))
        self.sh("\n".join(plan.commands))
        return plan.reason, plan.commands

    def files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())


def certified(vps: Vps, name: str, *, kept: bool = False, server: str = "https://ca.example.net/dir") -> None:
    """`name`'s certificate as certbot leaves it (its renewal file set aside by a teardown when `kept`)."""
    for f in ("cert.pem", "fullchain.pem", "privkey.pem"):
        vps.put(f"{LE}/live/{name}/{f}", "PEM\n")
        vps.put(f"{LE}/archive/{name}/{f.replace('.pem', '1.pem')}", "PEM\n")
    vps.put(f"{STATE}/acme-kept/{name}.conf" if kept else f"{LE}/renewal/{name}.conf", f"server = {server}\n")


def laid_out(tmp_path: Path) -> Vps:
    """pitunnel's app (renewing) and cam (kept by an earlier teardown), another's certificate, pitunnel's account."""
    vps = Vps(tmp_path)
    certified(vps, "pitunnel-app.example.com")
    certified(vps, "pitunnel-cam.example.com", kept=True)
    certified(vps, "mine.example.com")
    vps.put(f"{LE}/accounts/acme-v02/regr.json")
    vps.put(f"{STATE}/acme", "account\n")
    vps.put(f"{STATE}/acme-certs", "pitunnel-app.example.com\npitunnel-cam.example.com\n")
    return vps


def test_the_certificates_fact_reads_certbots_files(inv: Inventory, tmp_path: Path) -> None:
    vps = laid_out(tmp_path)
    certified(vps, "pitunnel-old.example.com", server="https://staging.example.net/dir")
    (vps.path(f"{LE}/live/pitunnel-old.example.com/fullchain.pem")).write_text("")  # an empty chain is no chain
    fact = acme.acme_fact(inv.vps["main"])
    found = fact.process(vps.sh(fact.script))
    assert found == acme.AcmeFound({
        "app.example.com": acme.CertState("https://ca.example.net/dir", True, False, NOT_AFTER),
        "cam.example.com": acme.CertState("https://ca.example.net/dir", True, True, NOT_AFTER),
        "old.example.com": acme.CertState("https://staging.example.net/dir", False, False, NOT_AFTER)})


def test_the_hand_given_certificates_expiry_is_read_only_where_there_is_one(tmp_path: Path) -> None:
    given = load_inventory(write(tmp_path, INVENTORY.replace("    public_name: vps.example.com\n",
                                                             "    public_name: vps.example.com\n    tls_certificate: /etc/ssl/c.pem\n"
                                                             "    tls_key: /etc/ssl/c.key\n")), save_allocations=False)
    vps = Vps(tmp_path)
    fact = acme.acme_fact(given.vps["main"])
    assert fact.process(vps.sh(fact.script)).given_not_after == ""  # not there (yet)
    vps.put("/etc/ssl/c.pem", "PEM\n")
    assert fact.process(vps.sh(fact.script)).given_not_after == NOT_AFTER
    inv = load_inventory(write(tmp_path, INVENTORY), save_allocations=False)
    assert "GIVEN" not in acme.acme_fact(inv.vps["main"]).script  # no hand-given certificate: nothing to ask openssl
    assert acme.acme_fact(inv.vps["main"]).key != fact.key  # one reading per certificate it looks at


def test_a_line_of_two_fields_is_the_given_certificate_only_when_it_says_so() -> None:
    assert acme.parse("").given_not_after == ""
    assert acme.parse("pitunnel-a.example.com|x\n").given_not_after == ""
    assert acme.parse("GIVEN|Feb  2 00:00:00 2030 GMT|x\n").given_not_after == ""


def test_teardown_sets_renewal_aside_for_pitunnels_certificates_alone_and_says_so(inv: Inventory, tmp_path: Path) -> None:
    vps = laid_out(tmp_path)
    before = vps.files()
    op = acme.CertificatesReleased(False, inv.vps["main"])
    assert op.title == "certificate renewal stopped"
    reason, _ = vps.apply(op)
    assert reason == ("renewal of pitunnel-app.example.com stopped; certificates and account kept (--purge removes "
                      "them: a CA rate-limits new certificates)")
    moved = {f"etc/letsencrypt/renewal/pitunnel-app.example.com.conf"}
    assert set(before) - set(vps.files()) == moved
    assert set(vps.files()) - set(before) == {"var/lib/pitunnel-state/acme-kept/pitunnel-app.example.com.conf"}
    assert (vps.path(STATE) / "acme-kept").stat().st_mode & 0o777 == 0o700
    assert vps.apply(op) == ("no certificate of pitunnel's renews (kept: --purge removes them)", [])
    assert acme.CertificatesReleased(False, inv.vps["main"]).plan(Vps(tmp_path / "empty").facts(op)).reason == \
        "no certificate of pitunnel's renews"


def test_two_renewing_certificates_are_named_together(inv: Inventory, tmp_path: Path) -> None:
    vps = laid_out(tmp_path)
    certified(vps, "pitunnel-vps.example.com")
    vps.put(f"{STATE}/acme-certs", "pitunnel-app.example.com\npitunnel-vps.example.com\n")
    reason, _ = vps.apply(acme.CertificatesReleased(False, inv.vps["main"]))
    assert reason.startswith("renewal of pitunnel-app.example.com, pitunnel-vps.example.com stopped;")


def test_purge_removes_pitunnels_certificates_its_account_and_its_records_and_nothing_else(
        inv: Inventory, tmp_path: Path) -> None:
    vps = laid_out(tmp_path)
    op = acme.CertificatesReleased(True, inv.vps["main"])
    assert op.title == "certificates and ACME account removed"
    reason, _ = vps.apply(op)
    assert reason == "remove 2 certificates and the ACME account pitunnel made"
    assert all("mine.example.com" in f for f in vps.files())  # the user's certificate alone is left
    assert len(vps.files()) == 7 and not vps.path(STATE).exists() and not vps.path(f"{LE}/accounts").exists()
    assert vps.apply(op) == ("none of pitunnel's", [])


def test_purge_keeps_an_account_pitunnel_did_not_make_and_drops_the_record_of_a_certificate_already_gone(
        inv: Inventory, tmp_path: Path) -> None:
    vps = laid_out(tmp_path)
    vps.put(f"{STATE}/acme", "")
    vps.put(f"{STATE}/acme-certs", "pitunnel-app.example.com\npitunnel-gone.example.com\n")
    vps.put(f"{STATE}/other", "kept\n")  # another kind of record: the state folder stays
    reason, _ = vps.apply(acme.CertificatesReleased(True, inv.vps["main"]))
    assert reason == "remove 1 certificates"
    assert vps.path(f"{LE}/accounts/acme-v02/regr.json").exists() and not vps.path(f"{STATE}/acme-certs").exists()
    assert vps.path(f"{STATE}/other").read_text() == "kept\n"
    vps.put(f"{STATE}/acme-certs", "pitunnel-gone.example.com\n")  # a record left of a certificate removed by hand
    reason, commands = vps.apply(acme.CertificatesReleased(True, inv.vps["main"]))
    assert reason == "remove 0 certificates" and commands and not vps.path(f"{STATE}/acme-certs").exists()


def test_purge_removes_the_account_pitunnel_made_even_when_no_certificate_is_left(inv: Inventory, tmp_path: Path) -> None:
    vps = Vps(tmp_path)
    vps.put(f"{LE}/accounts/acme-v02/regr.json")
    vps.put(f"{STATE}/acme", "account\n")
    reason, _ = vps.apply(acme.CertificatesReleased(True, inv.vps["main"]))
    assert reason == "remove 0 certificates and the ACME account pitunnel made"
    assert vps.files() == []


@pytest.mark.parametrize(("inside", "reason", "gone"), [
    (None, "not there", False),
    (["pitunnel.conf"], "remove (empty once pitunnel's files are gone)", True),
    ([], "remove (empty once pitunnel's files are gone)", True),
    (["pitunnel.conf", "mine.conf"], "kept: it holds files that are not pitunnel's", False),
])
def test_a_folder_goes_only_when_nothing_but_pitunnels_files_is_left_in_it(tmp_path: Path, inside: list[str] | None,
                                                                          reason: str, gone: bool) -> None:
    folder = tmp_path / "certbot.service.d"
    if inside is not None:
        folder.mkdir()
        for name in inside:
            (folder / name).write_text("x\n")
        (folder / "pitunnel.conf").unlink(missing_ok=True)  # removed by the op before this one
        for name in inside[1:]:
            (folder / name).write_text("x\n")
    op = acme.FolderGone(str(folder), frozenset({"pitunnel.conf"}))
    assert op.title == f"folder {folder} gone if empty"
    vps = Vps(tmp_path)
    assert vps.apply(op)[0] == reason
    assert folder.exists() is (inside is not None and not gone)


def test_the_folder_fact_tells_a_missing_folder_from_an_empty_one(tmp_path: Path) -> None:
    fact: Fact[frozenset[str] | None] = acme.FolderGone(str(tmp_path / "d"), frozenset()).fact()
    vps = Vps(tmp_path)
    assert fact.process(vps.sh(fact.script)) is None
    (tmp_path / "d").mkdir()
    assert fact.process(vps.sh(fact.script)) == frozenset()
    (tmp_path / "d" / "mine.conf").write_text("")
    assert fact.process(vps.sh(fact.script)) == frozenset({"mine.conf"})
