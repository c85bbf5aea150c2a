"""`pitunnel enroll`'s checks of its command line and its folder, exactly as the user reads them (each refusal one
line with its fix), the passphrase file read as WPA needs it, and the first-boot files' words that name the Pi
and its bootstrap key's expiry."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import yaml

from pitunnel import enroll
from pitunnel.inventory import Inventory, load_inventory
from tests.unit.test_enroll import WHEN, inv, made  # noqa: F401 (the fixture)


def refused(call: object, *args: object) -> str:
    with pytest.raises(enroll.EnrollRefused) as caught:
        call(*args)  # type: ignore[operator]
    return str(caught.value)


def test_a_bad_expiry_says_the_default() -> None:
    assert refused(enroll.expiry, "2w", WHEN) == ("--expires '2w': give a number and d, h or m (7d, 12h, 90m). "
                                                  "Fix: --expires 7d (the default)")


@pytest.mark.parametrize(("passphrase", "ok"), [
    ("AB" * 32, True), ("aF09" * 16, True), ("~correct horse~", True), (" spaces at both ends ", True),
    ("G" + "AB" * 31 + "A", False),
])
def test_wpa_takes_64_hex_digits_of_either_case_and_every_printable_ascii_character(passphrase: str, ok: bool) -> None:
    assert (enroll.passphrase_problem(passphrase) is None) is ok


def test_a_passphrase_with_other_characters_says_which_wpa_takes() -> None:
    assert enroll.passphrase_problem("pässwörd!") == ("it has characters that are not printable ASCII: WPA takes "
                                                      "those alone")


@pytest.mark.parametrize(("written", "passphrase"), [
    ("correct horse \nsecond line\n", "correct horse "),  # a trailing space is part of it
    ("windows editor X\r\n", "windows editor X"),  # a CRLF file's \r is not
])
def test_the_passphrase_file_gives_its_first_line_as_it_is(tmp_path: Path, written: str, passphrase: str) -> None:
    (tmp_path / "pass").write_bytes(written.encode())
    found = enroll.wifi("home", "GB", str(tmp_path / "pass"), prompt=None)
    assert found is not None and found.passphrase == passphrase


def test_a_passphrase_file_that_cannot_be_read_or_holds_no_passphrase_says_so(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    assert refused(enroll.wifi, "home", "GB", missing, None) == (
        f"--passphrase-file {missing}: cannot read it (No such file or directory). Fix: give the file holding the "
        "Wi-Fi passphrase on its first line")
    (tmp_path / "short").write_text("short\n")
    assert refused(enroll.wifi, "home", "GB", str(tmp_path / "short"), None) == (
        f"--passphrase-file {tmp_path / 'short'}: it has 5 characters: WPA takes 8 to 63 (or 64 hex digits). Fix: "
        "give the network's WPA passphrase")


def test_wifi_options_without_an_ssid_name_the_option_given() -> None:
    assert refused(enroll.wifi, "", "", "pass.txt", None) == ("--passphrase-file is for Wi-Fi, and no --ssid is "
                                                              "given. Fix: add --ssid NAME, or leave it out for a "
                                                              "wired Pi")


@pytest.mark.parametrize("ssid", ["X" * 32, "X", "café"])
def test_an_ssid_of_up_to_32_bytes_is_taken(ssid: str) -> None:
    found = enroll.wifi(ssid, "GB", "", prompt=lambda text: "correct horse")
    assert found is not None and found.ssid == ssid


def test_an_ssid_without_a_country_asks_for_one_and_quotes_no_empty_one() -> None:
    assert refused(enroll.wifi, "home", "", "", None) == (
        "--ssid home needs --country CC, the two-letter code of the country the Pi is in (its Wi-Fi regulatory "
        "domain: GB, DE, US...)")


@pytest.mark.parametrize("user_data", [
    "#cloud-config\n",  # one line: no marker
    b"#cloud-config\n# caf\xe9\n",  # not UTF-8
    None,  # a link to nothing
])
def test_cloud_init_files_not_pitunnels_are_refused_whatever_they_hold(tmp_path: Path, user_data: str | bytes | None) -> None:
    if user_data is None:
        (tmp_path / "user-data").symlink_to(tmp_path / "gone")
    elif isinstance(user_data, bytes):
        (tmp_path / "user-data").write_bytes(user_data)
    else:
        (tmp_path / "user-data").write_text(user_data)
    assert enroll.boot_problem(tmp_path, "pi1") == (
        f"{tmp_path} holds cloud-init files (user-data) not pitunnel's: refused, so that another host's first boot "
        "is not overwritten. Fix: give the card (or folder) of pi1, or remove those files first")


def test_an_unknown_pi_is_refused_naming_the_inventorys_pis(inv: Inventory, tmp_path: Path) -> None:  # noqa: F811
    assert refused(enroll.vet, inv, "pi9", tmp_path) == (
        f"no Pi named 'pi9' in {inv.path} (its Pis: pi1, pi2). Fix: add it under pis: first (no address needed: an "
        "enrolled Pi is reached through its tunnel)")


def test_no_laptop_key_is_refused_before_anything_is_written(inv: Inventory, tmp_path: Path) -> None:  # noqa: F811
    inv.path.write_text(inv.path.read_text().replace(f"  laptop_key: {tmp_path}/id\n", ""))
    (tmp_path / "id").unlink()
    bare = load_inventory(inv.path, save_allocations=False)
    boot = tmp_path / "boot"
    boot.mkdir()
    assert refused(enroll.vet, bare, "pi1", boot) == (
        f"no laptop key: the Pi's login user would get no key to log in with. Fix: set settings.laptop_key in "
        f"{bare.path} (or make ~/.ssh/id_ed25519)")
    assert list(boot.iterdir()) == []


def test_the_files_name_the_pi_the_expiry_and_the_bootstrap_key_for_the_vpses(inv: Inventory) -> None:  # noqa: F811
    seed, _, boot = made(inv, enroll.WiFi("home", "GB", "correct horse"))
    assert seed.bootstrap_public == boot.public
    text = seed.files["user-data"]
    assert "(which the VPS accepts until 2026-12-06 15:00 UTC)" in text
    unit = {f["path"]: f["content"] for f in yaml.safe_load(text)["write_files"]}
    assert "Description=pitunnel: bootstrap tunnel from pi1 to VPS %i (until provision-pi)" in \
        unit["/etc/systemd/system/pitunnel-bootstrap@.service"].splitlines()
    assert seed.files["network-config"].splitlines()[0] == ("# Written by `pitunnel enroll` for pi1: Wi-Fi at first "
                                                            "boot (the passphrase is in it).")
    assert re.fullmatch(r"pitunnel-pi1-[0-9a-f]{8}", yaml.safe_load(seed.files["meta-data"])["instance-id"])


def test_a_wired_pi_written_into_an_empty_folder_gets_no_network_config(inv: Inventory, tmp_path: Path) -> None:  # noqa: F811
    boot = tmp_path / "boot"
    boot.mkdir()
    assert enroll.write_seed(boot, made(inv)[0].files) == ["user-data", "meta-data"]
    assert sorted(p.name for p in boot.iterdir()) == ["meta-data", "user-data"]


def test_an_inventory_without_pis_is_refused_saying_it_has_none(tmp_path: Path) -> None:
    (tmp_path / "hosts.yml").write_text("vps:\n  main: {address: 203.0.113.1}\n")
    bare = load_inventory(tmp_path / "hosts.yml", save_allocations=False)
    assert refused(enroll.vet, bare, "pi1", tmp_path) == (
        f"no Pi named 'pi1' in {bare.path} (its Pis: none). Fix: add it under pis: first (no address needed: an "
        "enrolled Pi is reached through its tunnel)")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into any folder of a writable file system")
@pytest.mark.parametrize("mode", [0o500, 0o600])  # not writable; writable but not searchable (no file opens in it)
def test_a_folder_the_user_cannot_write_into_is_refused_before_anything_is_written(tmp_path: Path, mode: int) -> None:
    boot = tmp_path / "boot"
    boot.mkdir(mode=mode)
    try:
        assert enroll.boot_problem(boot, "pi1") == (f"{boot} is not writable. Fix: mount the card's boot partition "
                                                    "writable, or run as its owner")
    finally:
        boot.chmod(0o700)
