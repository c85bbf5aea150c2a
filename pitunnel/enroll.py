"""`pitunnel enroll PI --boot DIR`, on the laptop: the Pi's first-boot files (cloud-init NoCloud: user-data,
meta-data, network-config) and the keys in them, made here; what is wrong with the command line, the folder
or the Wi-Fi passphrase, found before anything is written or any host touched.

The Pi's host key is made here and pinned in the laptop's known_hosts, so the first contact checks it (no trust
on first use). Its bootstrap tunnel key is made here too: the VPS accepts it for that Pi's listeners alone, until
it expires (roles/enroll.py authorises it). The text of the files is in roles/pi/templates; this module decides.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pitunnel.inventory import Inventory, PiSpec
from pitunnel.ops.records import record_commands
from pitunnel.roles.pi.locations import bootstrap_unit, credential_path
from pitunnel.roles.pi.role import PI_DEFAULTS, ROLE
from pitunnel.roles.pi.steps import context, laptop_key_line, pins_text

SEED_FILES = ("user-data", "meta-data", "network-config")
MARKER = "pitunnel enroll: {pi}"  # the second line of the user-data it writes: whose files these are
DEFAULT_EXPIRES = "7d"
_EXPIRES = re.compile(r"([1-9][0-9]{0,3})([dhm])")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}
_COUNTRY = re.compile(r"[A-Z]{2}")


class EnrollRefused(Exception):
    """One line: what is wrong, and the fix. Nothing was written, no host touched."""


@dataclass(frozen=True)
class WiFi:
    """The network the Pi joins at first boot. The passphrase never comes from the command line."""

    ssid: str
    country: str
    passphrase: str = field(repr=False)


@dataclass(frozen=True)
class KeyPair:
    """A new ed25519 key: its private half as OpenSSH writes it, and its public line `ssh-ed25519 BASE64`."""

    private: str = field(repr=False)
    public: str


def new_key() -> KeyPair:
    """A new ed25519 key, made in memory (no private key in a temp file)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return KeyPair(private, public)


def expiry(text: str, now: datetime) -> datetime:
    """When the bootstrap key expires: `--expires` (N days, hours or minutes: 7d, 12h, 90m) after `now`."""
    found = _EXPIRES.fullmatch(text.strip())
    if found is None:
        raise EnrollRefused(f"--expires {text!r}: give a number and d, h or m (7d, 12h, 90m). Fix: --expires 7d "
                            "(the default)")
    return now + timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})


def passphrase_problem(passphrase: str) -> str | None:
    """Why WPA would refuse this passphrase (None: it would not): 8 to 63 printable ASCII characters, or
    64 hex digits (the key itself)."""
    if re.fullmatch(r"[0-9A-Fa-f]{64}", passphrase):
        return None
    if not 8 <= len(passphrase) <= 63:
        return f"it has {len(passphrase)} characters: WPA takes 8 to 63 (or 64 hex digits)"
    if not all(" " <= c <= "~" for c in passphrase):
        return "it has characters that are not printable ASCII: WPA takes those alone"
    return None


def read_passphrase(file: str, ssid: str, prompt: Callable[[str], str] | None) -> str:
    """The Wi-Fi passphrase: the file's first line, or asked at the terminal (`prompt`: getpass)."""
    if file:
        path = Path(file).expanduser()
        try:
            text = path.read_text().split("\n", 1)[0].rstrip("\r")
        except OSError as exc:
            raise EnrollRefused(f"--passphrase-file {file}: cannot read it ({exc.strerror or exc}). Fix: give the "
                                "file holding the Wi-Fi passphrase on its first line") from None
        where = f"--passphrase-file {file}"
    else:
        assert prompt is not None
        text, where = prompt(f"Wi-Fi passphrase for {ssid}: "), "the Wi-Fi passphrase"
    problem = passphrase_problem(text)
    if problem:
        raise EnrollRefused(f"{where}: {problem}. Fix: give the network's WPA passphrase")
    return text


def wifi(ssid: str, country: str, passphrase_file: str, prompt: Callable[[str], str] | None) -> WiFi | None:
    """The Wi-Fi of the command line (None: none): an SSID needs its country code, and a passphrase."""
    if not ssid:
        if country or passphrase_file:
            raise EnrollRefused(f"{'--country' if country else '--passphrase-file'} is for Wi-Fi, and no --ssid is "
                                "given. Fix: add --ssid NAME, or leave it out for a wired Pi")
        return None
    if len(ssid.encode()) > 32 or any(c in ssid for c in "\n\r\0"):
        raise EnrollRefused(f"--ssid {ssid!r}: a Wi-Fi name has 1 to 32 bytes on one line. Fix: give the network's name")
    if not _COUNTRY.fullmatch(country.upper()):
        raise EnrollRefused(f"--ssid {ssid} needs --country CC, the two-letter code of the country the Pi is in "
                            f"(its Wi-Fi regulatory domain: GB, DE, US...){f', not {country!r}' if country else ''}")
    return WiFi(ssid, country.upper(), read_passphrase(passphrase_file, ssid, prompt))


def boot_problem(boot: Path, pi: str) -> str | None:
    """Why the seed cannot go into `boot` (None: it can): not a writable folder, or it holds cloud-init files
    that are not pitunnel's for this Pi (another host's, or written by something else)."""
    if not boot.is_dir():
        return f"{boot} is not a folder. Fix: give the mounted boot partition of the Pi's card (or any folder)"
    if not os.access(boot, os.W_OK | os.X_OK):
        return f"{boot} is not writable. Fix: mount the card's boot partition writable, or run as its owner"
    present = [name for name in SEED_FILES if (boot / name).exists() or (boot / name).is_symlink()]
    if not present:
        return None
    try:
        lines = (boot / "user-data").read_text(errors="replace").splitlines()[:2]
    except OSError:
        lines = []
    owner = re.fullmatch(r"# " + re.escape(MARKER).replace(r"\{pi\}", "(.+)"), lines[1]) if len(lines) == 2 else None
    if owner is not None and owner.group(1) == pi:
        return None
    whose = f"pitunnel's for {owner.group(1)}" if owner else "not pitunnel's"
    return (f"{boot} holds cloud-init files ({', '.join(present)}) {whose}: refused, so that another host's first "
            f"boot is not overwritten. Fix: give the card (or folder) of {pi}, or remove those files first")


def vet(inv: Inventory, name: str, boot: Path) -> PiSpec:
    """The Pi to enrol, once it is known that the laptop can reach it afterwards, and that `boot` takes its files."""
    pi = inv.pis.get(name)
    if pi is None:
        names = ", ".join(inv.pis) or "none"
        raise EnrollRefused(f"no Pi named {name!r} in {inv.path} (its Pis: {names}). Fix: add it under pis: first "
                            "(no address needed: an enrolled Pi is reached through its tunnel)")
    if any(path.ssh_tunnel is None for path in pi.paths()):
        raise EnrollRefused(f"{name} has no ssh tunnel, so the laptop would have no way in once it boots far away. "
                            f"Fix: add a tunnel of 'type: ssh' (local_port: 22) under pis.{name}.tunnels in {inv.path}")
    problem = boot_problem(boot, name)
    if problem:
        raise EnrollRefused(f"--boot {problem}")
    if laptop_key_line(inv) is None:
        raise EnrollRefused(f"no laptop key: the Pi's login user would get no key to log in with. Fix: set "
                            f"settings.laptop_key in {inv.path} (or make ~/.ssh/id_ed25519)")
    return pi


@dataclass(frozen=True)
class Seed:
    """What `enroll` writes for one Pi: the files' texts (a name -> text; network-config only with Wi-Fi), the
    host key the laptop pins, and the bootstrap key's public line for its VPSes."""

    files: dict[str, str] = field(repr=False)
    host_public: str
    bootstrap_public: str


def seed(inv: Inventory, pi: PiSpec, vps_host_keys: dict[str, tuple[str, ...]], *, expires: datetime,
         network: WiFi | None, host: KeyPair, bootstrap: KeyPair) -> Seed:
    """The first-boot files of `pi`: its login user with the laptop's key (no password), its host key, and a
    bootstrap tunnel (the image's own ssh -NR) to each of its VPSes, with that VPS's host keys pinned."""
    folder = PI_DEFAULTS["bootstrap_dir"]
    paths = []
    for vps in inv.vpses_of(pi):
        variables = {**context(pi, vps), "key_path": credential_path(vps.name), "vps_config_dir": f"{folder}/{vps.name}"}
        paths.append(dict(config=f"{folder}/{vps.name}/ssh_config", known_hosts=f"{folder}/{vps.name}/known_hosts",
                          ssh_config=ROLE.render("ssh_config.j2", **variables), unit=bootstrap_unit(vps.name),
                          pins=pins_text(vps, vps_host_keys[vps.name])))
    shown = expires.strftime("%Y-%m-%d %H:%M UTC")
    files = {
        "user-data": ROLE.render(
            "user-data.j2", marker=MARKER.format(pi=pi.name), expires_shown=shown, pi=pi.name, user=pi.user,
            laptop_key=laptop_key_line(inv), host_private=host.private, host_public=f"{host.public} root@{pi.name}",
            bootstrap_private=bootstrap.private, bootstrap_key_path=f"{folder}/key",
            bootstrap_unit_path=f"/etc/systemd/system/{PI_DEFAULTS['bootstrap_unit']}",
            bootstrap_unit=ROLE.render("bootstrap.service.j2", pi=pi.name, bootstrap_key_path=f"{folder}/key"),
            paths=paths, record=record_commands("users", [PI_DEFAULTS["bootstrap_user"]])),
        "meta-data": ROLE.render("meta-data.j2", pi=pi.name, instance_id=f"pitunnel-{pi.name}-{secrets.token_hex(4)}"),
    }
    if network is not None:
        files["network-config"] = ROLE.render("network-config.j2", pi=pi.name, ssid=network.ssid,
                                              country=network.country, passphrase=network.passphrase)
    return Seed(files, host.public, bootstrap.public)


def write_seed(boot: Path, files: dict[str, str]) -> list[str]:
    """The seed files into `boot`, each readable by its owner alone (on a FAT boot partition the mount decides),
    written beside and renamed into place; a network-config of an earlier enrolment of this Pi goes when this
    one has no Wi-Fi. Returns the names written."""
    for name in SEED_FILES:
        if name not in files and (boot / name).exists():
            (boot / name).unlink()
    for name, text in files.items():
        tmp = boot / f".{name}.pitunnel-tmp"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.replace(tmp, boot / name)
    return list(files)

