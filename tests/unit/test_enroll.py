"""`pitunnel enroll`: the first-boot files as cloud-init and OpenSSH read them, the refusals before anything is
written, the inventory's optional address, and the bootstrap key's line on the VPS (pure: tmp_path only; the
files booting a real Pi are proven in the lab, tests/lab/test_enroll.py)."""

from __future__ import annotations

import subprocess
import textwrap
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization

from pitunnel import enroll, sshconf
from pitunnel.facts import FileState
from pitunnel.inventory import Inventory, InventoryError, load_inventory
from pitunnel.inventory.model import Revoked
from pitunnel.ops.records import record_commands
from pitunnel.roles.revoke import keys_off
from pitunnel.roles.vps import authorized
from pitunnel.roles.vps.sessions import grants
from pitunnel.sshkeys import parse_public_key

VPS_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk0cFVnZVtvZKzYZ0x4bE0nZ8d1bW1lUGrVbZ1c9pQr"
WHEN = datetime(2026, 12, 6, 15, 0, tzinfo=timezone.utc)
INVENTORY = """
settings:
  known_hosts: {d}/known_hosts
  laptop_key: {d}/id
vps:
  main: {{address: vps.example.com, port: 2222}}
  spare: {{address: 203.0.113.9}}
pis:
  pi1:
    vps: [main, spare]
    tunnels:
      ssh: {{type: ssh, remote_port: 20022}}
      web: {{type: http, remote_port: 20080, local_port: 8080}}
  pi2:
    address: 10.0.0.2
    vps: main
    tunnels:
      web: {{type: http, remote_port: 20090}}
"""


@pytest.fixture
def inv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Inventory:
    monkeypatch.setenv("HOME", str(tmp_path))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f", str(tmp_path / "id")],
                   check=True)
    path = tmp_path / "hosts.yml"
    path.write_text(textwrap.dedent(INVENTORY).format(d=tmp_path))
    return load_inventory(path, save_allocations=False)


def made(inv: Inventory, network: enroll.WiFi | None = None) -> tuple[enroll.Seed, enroll.KeyPair, enroll.KeyPair]:
    host, boot = enroll.new_key(), enroll.new_key()
    keys = {"main": (VPS_KEY,), "spare": (VPS_KEY,)}
    return enroll.seed(inv, inv.pis["pi1"], keys, expires=WHEN, network=network, host=host, bootstrap=boot), host, boot


def test_a_pi_without_address_is_reached_through_its_tunnel_only(inv: Inventory) -> None:
    pi = inv.pis["pi1"]
    assert pi.tunnel_only and pi.via == "tunnel" and pi.address == "pi1"
    assert not inv.pis["pi2"].tunnel_only and inv.pis["pi2"].via == "auto"
    # its host key is filed under its name, and no Host entry of the user's ssh config is looked up for it
    config = sshconf.load(None)
    assert sshconf.resolve(pi, config).target.known_name == "pi1"


@pytest.mark.parametrize(("extra", "words"), [
    ("    via: direct\n", "'via: direct' needs the address of pi3"),
    ("", "pi3 has no address, so the laptop reaches it through its ssh tunnel only, and it has none"),
])
def test_a_pi_without_address_needs_the_tunnel_way_in(inv: Inventory, extra: str, words: str) -> None:
    text = inv.path.read_text() + "  pi3:\n    vps: main\n    tunnels:\n      web: {type: http, remote_port: 20070}\n" + extra
    inv.path.write_text(text)
    with pytest.raises(InventoryError) as caught:
        load_inventory(inv.path, save_allocations=False)
    assert words in str(caught.value)


def test_user_data_as_cloud_init_reads_it(inv: Inventory) -> None:
    seed, host, boot = made(inv)
    assert set(seed.files) == {"user-data", "meta-data"}  # no Wi-Fi: no network-config
    text = seed.files["user-data"]
    assert text.splitlines()[:2] == ["#cloud-config", "# pitunnel enroll: pi1"]
    data = yaml.safe_load(text)
    assert data["hostname"] == "pi1" and data["manage_etc_hosts"] is True
    login, account = data["users"]
    laptop = (inv.path.parent / "id.pub").read_text().split()[:2]
    assert login["name"] == "pi" and login["lock_passwd"] is True and "passwd" not in login
    assert [k.split()[:2] for k in login["ssh_authorized_keys"]] == [laptop]
    assert login["sudo"] == "ALL=(ALL) NOPASSWD:ALL"
    assert account == {"name": "pitunnel-boot", "system": True, "lock_passwd": True, "shell": "/usr/sbin/nologin"}
    assert data["ssh_pwauth"] is False and data["ssh_deletekeys"] is True and data["ssh_genkeytypes"] == []
    # the host key: the private half the Pi installs is the one whose public half the laptop pins
    private = serialization.load_ssh_private_key(data["ssh_keys"]["ed25519_private"].encode(), None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert public.decode() == host.public == seed.host_public
    assert data["ssh_keys"]["ed25519_public"].split()[:2] == host.public.split()
    files = {f["path"]: f for f in data["write_files"]}
    key = files["/etc/pitunnel-bootstrap/key"]
    assert key["permissions"] == "0600" and key["content"] == boot.private
    assert data["runcmd"][:2] == record_commands("users", ["pitunnel-boot"])  # pitunnel's account: it may remove it
    assert data["runcmd"][2:] == [["systemctl", "daemon-reload"],
                              ["systemctl", "enable", "--now", "pitunnel-bootstrap@main.service"],
                              ["systemctl", "enable", "--now", "pitunnel-bootstrap@spare.service"]]
    meta = yaml.safe_load(seed.files["meta-data"])
    assert meta["local-hostname"] == "pi1" and meta["instance-id"].startswith("pitunnel-pi1-")
    assert made(inv)[0].files["meta-data"] != seed.files["meta-data"]  # a new enrolment is a new instance


def test_each_bootstrap_tunnel_is_the_images_own_ssh_with_keepalives_and_the_vps_pinned(
        inv: Inventory, tmp_path: Path) -> None:
    seed, _, _ = made(inv)
    files = {f["path"]: f["content"] for f in yaml.safe_load(seed.files["user-data"])["write_files"]}
    unit = files["/etc/systemd/system/pitunnel-bootstrap@.service"]
    lines = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert "ExecStart=/usr/bin/ssh -N -F /etc/pitunnel-bootstrap/%i/ssh_config pitunnel-vps" in lines
    for wanted in ("Restart=always", "StartLimitIntervalSec=0", "User=pitunnel-boot",
                   "LoadCredential=key:/etc/pitunnel-bootstrap/key"):
        assert wanted in lines, wanted
    assert files["/etc/pitunnel-bootstrap/main/known_hosts"] == f"[vps.example.com]:2222 {VPS_KEY}\n"
    assert files["/etc/pitunnel-bootstrap/spare/known_hosts"] == f"203.0.113.9 {VPS_KEY}\n"
    config = tmp_path / "ssh_config"
    config.write_text(files["/etc/pitunnel-bootstrap/main/ssh_config"])
    shown = subprocess.run(["ssh", "-G", "-F", str(config), "pitunnel-vps"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    for wanted in ("hostname vps.example.com", "port 2222", "user pitunnel", "stricthostkeychecking true",
                   "identityfile /run/credentials/pitunnel-bootstrap@main.service/key", "exitonforwardfailure yes",
                   "userknownhostsfile /etc/pitunnel-bootstrap/main/known_hosts", "serveraliveinterval 10",
                   "serveralivecountmax 2", "remoteforward [127.0.0.1]:20022 [127.0.0.1]:22",
                   "remoteforward [127.0.0.1]:20080 [127.0.0.1]:8080"):
        assert wanted in shown, wanted


def test_wifi_goes_to_network_config(inv: Inventory) -> None:
    seed, _, _ = made(inv, enroll.WiFi('Home "5G"', "GB", "correct horse battery"))
    data = yaml.safe_load(seed.files["network-config"])
    wlan = data["network"]["wifis"]["wlan0"]
    assert data["network"]["version"] == 2 and wlan["regulatory-domain"] == "GB"
    assert wlan["access-points"] == {'Home "5G"': {"password": "correct horse battery"}}


@pytest.mark.parametrize(("passphrase", "ok"), [
    ("1234567", False), ("12345678", True), ("x" * 63, True), ("x" * 64, False), ("ab" * 32, True),
    ("pässwörd!", False), ("tab\there1", False),
])
def test_wpa_passphrase_length_and_characters(passphrase: str, ok: bool) -> None:
    assert (enroll.passphrase_problem(passphrase) is None) is ok


@pytest.mark.parametrize(("args", "words"), [
    (("", "GB", ""), "--country is for Wi-Fi, and no --ssid is given"),
    (("home", "", ""), "--ssid home needs --country CC"),
    (("home", "GBR", ""), "not 'GBR'"),
    (("x" * 33, "GB", ""), "1 to 32 bytes"),
    (("home", "gb", "missing"), "--passphrase-file missing: cannot read it"),
])
def test_wifi_refusals(tmp_path: Path, args: tuple[str, str, str], words: str) -> None:
    with pytest.raises(enroll.EnrollRefused) as caught:
        enroll.wifi(*args, prompt=lambda text: "never asked")
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_passphrase_from_a_file_or_the_prompt(tmp_path: Path) -> None:
    (tmp_path / "pass").write_text("correct horse\nignored\n")
    assert enroll.wifi("home", "gb", str(tmp_path / "pass"), prompt=None).passphrase == "correct horse"
    asked: list[str] = []
    found = enroll.wifi("home", "de", "", prompt=lambda text: asked.append(text) or "from the prompt")
    assert found == enroll.WiFi("home", "DE", "from the prompt") and asked == ["Wi-Fi passphrase for home: "]
    assert "from the prompt" not in repr(found)
    with pytest.raises(enroll.EnrollRefused, match="the Wi-Fi passphrase: it has 5 characters"):
        enroll.wifi("home", "de", "", prompt=lambda text: "short")


def test_expiry() -> None:
    assert enroll.expiry("7d", WHEN) == datetime(2026, 12, 13, 15, 0, tzinfo=timezone.utc)
    assert enroll.expiry("90m", WHEN) == datetime(2026, 12, 6, 16, 30, tzinfo=timezone.utc)
    for bad in ("0d", "7", "1w", "-1h", ""):
        with pytest.raises(enroll.EnrollRefused, match="--expires"):
            enroll.expiry(bad, WHEN)


def test_refusals_name_the_fix_and_write_nothing(inv: Inventory, tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    with pytest.raises(enroll.EnrollRefused, match="pi2 has no ssh tunnel"):
        enroll.vet(inv, "pi2", boot)
    with pytest.raises(enroll.EnrollRefused, match="no Pi named 'pi9'"):
        enroll.vet(inv, "pi9", boot)
    with pytest.raises(enroll.EnrollRefused, match="is not a folder"):
        enroll.vet(inv, "pi1", tmp_path / "nope")
    (boot / "user-data").write_text("#cloud-config\n# pitunnel enroll: pi7\n")
    with pytest.raises(enroll.EnrollRefused, match=r"holds cloud-init files \(user-data\) pitunnel's for pi7"):
        enroll.vet(inv, "pi1", boot)
    (boot / "user-data").write_text("#cloud-config\nhostname: other\n")
    (boot / "meta-data").write_text("instance-id: x\n")
    with pytest.raises(enroll.EnrollRefused, match=r"\(user-data, meta-data\) not pitunnel's"):
        enroll.vet(inv, "pi1", boot)
    assert sorted(p.name for p in boot.iterdir()) == ["meta-data", "user-data"]
    assert (boot / "user-data").read_text() == "#cloud-config\nhostname: other\n"


def test_files_written_owner_only_and_a_rerun_replaces_its_own(inv: Inventory, tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    wifi = made(inv, enroll.WiFi("home", "GB", "correct horse"))[0]
    assert enroll.write_seed(boot, wifi.files) == ["user-data", "meta-data", "network-config"]
    for name in wifi.files:
        assert (boot / name).stat().st_mode & 0o777 == 0o600
        assert (boot / name).read_text() == wifi.files[name]
    assert enroll.vet(inv, "pi1", boot) is inv.pis["pi1"]  # its own files: enrolling it again is fine
    wired = made(inv)[0]
    enroll.write_seed(boot, wired.files)
    assert sorted(p.name for p in boot.iterdir()) == ["meta-data", "user-data"]  # the Wi-Fi (and its passphrase) gone


def test_bootstrap_key_line_expires_and_opens_the_pis_listeners_alone(inv: Inventory) -> None:
    vps = inv.vps["main"]
    key = enroll.new_key().public
    line = authorized.authorized_line(vps, inv.pis["pi1"].path("main"), key, expires="20261213150000Z")
    options, keytype, blob, marker = line.split()
    assert (keytype, blob, marker) == (*key.split(), "pitunnel-bootstrap:pi1")
    assert options == ('restrict,port-forwarding,permitlisten="127.0.0.1:20022",permitlisten="127.0.0.1:20080",'
                       'command="/bin/false",expiry-time="20261213150000Z"')
    granted = grants(line)[parse_public_key(key).fingerprint]
    assert (granted.expiry, granted.utc) == ("20261213150000", True)  # its sessions end once it expires


def test_bootstrap_line_kept_by_later_runs_until_replaced_dropped_or_revoked(inv: Inventory) -> None:
    vps = inv.vps["main"]
    path = inv.pis["pi1"].path("main")
    own, boot, boot2 = (enroll.new_key().public for _ in range(3))
    line = authorized.authorized_line(vps, path, boot, expires="20261213150000Z")

    def render(before: str, **kw: object) -> str:
        op = authorized.authorized_keys(inv, vps, **kw)  # type: ignore[arg-type]
        return op.wanted(FileState(exists=True, content=before.encode()))

    first = render("", new_keys={}, bootstrap={"pi1": line})
    assert first == line + "\n"
    later = render(first, new_keys={"pi1": own})  # provision-pi / rotate-keys: the bootstrap line stays
    assert later.splitlines()[1] == line and "pitunnel:pi1" in later.splitlines()[0]
    again = authorized.authorized_line(vps, path, boot2, expires="20261214150000Z")
    assert render(later, new_keys={}, bootstrap={"pi1": again}).splitlines()[1] == again  # enrolled again
    assert "bootstrap" not in render(later, new_keys={}, bootstrap={"pi1": None})
    assert render(later, new_keys={}, drop=frozenset({"pi1"})) == ""
    record = Revoked("pi1", "2026-12-06T15:00:00Z", (parse_public_key(own),))
    assert keys_off(vps, record).wanted(FileState(exists=True, content=later.encode())) == ""


def test_provision_pi_retires_the_bootstrap_after_leaving_when_it_rides_it(inv: Inventory) -> None:
    from pitunnel.ops import Absent, Later, Service, UserAbsent
    from pitunnel.roles.pi.bootstrap import retire_ops

    pi = inv.pis["pi1"]
    direct = retire_ops(pi, riding=False)
    assert [type(op) for op in direct] == [Service, Service, Absent, Absent, UserAbsent]
    assert [op.title for op in direct[:2]] == ["main: bootstrap tunnel retired", "spare: bootstrap tunnel retired"]
    assert [op.path for op in direct[2:4]] == ["/etc/systemd/system/pitunnel-bootstrap@.service",  # type: ignore[attr-defined]
                                               "/etc/pitunnel-bootstrap"]
    riding = retire_ops(pi, riding=True)  # the run's connection rides it: all of it once the run has left
    assert all(isinstance(op, Later) for op in riding)
    assert [op.op.title for op in riding] == [op.title for op in direct]  # type: ignore[attr-defined]
