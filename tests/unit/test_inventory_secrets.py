"""Secrets on the laptop (issue 11, row 12): the secrets folder is ignored by git, no repr shows a password,
and a secret file that other users can read or change is refused, naming the file and `chmod 600 FILE`."""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from fabric import Connection

from pitunnel.inventory import InventoryError, load_inventory, ports_file, sidefile
from pitunnel.inventory.revoked import revoked_file
from lab import core
from lab.plan import make_plan
from pitunnel.inventory.rewrite import backup_path
from pitunnel.remote import Credentials, Remote
from pitunnel.roles.migrate import state_file

ROOT = Path(__file__).resolve().parents[2]
LOGIN, SUDO = "login-pw-Zq81", "sudo-pw-Xk27"


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder other users can enter (pytest's own tmp folders are private to us, which already protects
    everything in them), holding an inventory and an empty HOME."""
    folder = Path(tempfile.mkdtemp(prefix="pitunnel-secrets-"))
    folder.chmod(0o755)
    (folder / "home").mkdir()
    monkeypatch.setenv("HOME", str(folder / "home"))
    yield folder
    shutil.rmtree(folder)


def secret(folder: Path, name: str, mode: int, content: str = "s3cret\n") -> Path:
    file = folder / name
    file.write_text(content)
    file.chmod(mode)
    return file


def inventory(folder: Path, **keys: Path) -> Path:
    host = "".join(f"    {key}: {value}\n" for key, value in keys.items() if key != "basic_auth_file")
    tunnel = f", basic_auth_file: {keys['basic_auth_file']}" if "basic_auth_file" in keys else ""
    path = folder / "hosts.yml"
    path.write_text("vps:\n  main: {tls_certificate: /c.pem, tls_key: /k.pem,\n    address: 203.0.113.1}\npis:\n  pi1:\n    address: 10.0.0.1\n" + host
                    + f"    tunnels:\n      web: {{type: http{tunnel}}}\n")
    return path


@pytest.mark.parametrize(("key", "mode", "who"), [
    ("sudo_password_file", 0o644, "other users"),
    ("password_file", 0o604, "other users"),
    ("password_file", 0o602, "other users"),  # others could put their own password in
    ("sudo_password_file", 0o640, "its group"),
    ("key", 0o644, "other users"),
    ("basic_auth_file", 0o666, "other users"),
])
def test_secret_file_others_can_read_is_refused_naming_file_and_chmod(shared: Path, key: str, mode: int,
                                                                      who: str) -> None:
    file = secret(shared, "secret-file", mode)
    path = inventory(shared, **{key: file})
    with pytest.raises(InventoryError) as caught:
        load_inventory(path, save_allocations=False)
    [problem] = caught.value.problems
    line = 7 if key != "basic_auth_file" else 8
    key_path = f"pis.pi1.{key}" if key != "basic_auth_file" else "pis.pi1.tunnels.web.basic_auth_file"
    assert str(problem) == (f"{path}:{line}:{problem.column}: {key_path}: {file} holds a secret but {who} can read "
                            f"or change it (mode {mode:04o}). Fix: chmod 600 {file}.")


def test_secret_file_private_to_its_owner_passes(shared: Path) -> None:
    files = {key: secret(shared, key, 0o600) for key in ("password_file", "sudo_password_file", "key")}
    files["basic_auth_file"] = secret(shared, "htpasswd", 0o600, "alice:$apr1$x$y\n")
    pi = load_inventory(inventory(shared, **files), save_allocations=False).pis["pi1"]
    assert (pi.password_file, pi.sudo_password_file, pi.key) == (
        files["password_file"], files["sudo_password_file"], files["key"])


def test_readable_file_in_a_folder_others_cannot_enter_passes(shared: Path) -> None:
    """What matters is whether another user can read it: a 0644 file in a 0700 folder is private."""
    private = shared / "secrets"
    private.mkdir(mode=0o700)
    file = secret(private, "pi-password", 0o644)
    assert load_inventory(inventory(shared, password_file=file), save_allocations=False).pis["pi1"].password_file
    private.chmod(0o750)  # the group may enter now, but the file gives the group read access too
    with pytest.raises(InventoryError, match="its group can read or change it"):
        load_inventory(inventory(shared, password_file=file), save_allocations=False)


def test_symlink_to_an_exposed_secret_is_refused(shared: Path) -> None:
    target = secret(shared, "real-password", 0o644)
    private = shared / "secrets"
    private.mkdir(mode=0o700)
    (private / "pi-password").symlink_to(target)
    with pytest.raises(InventoryError, match="other users can read or change it"):
        load_inventory(inventory(shared, password_file=private / "pi-password"), save_allocations=False)


def test_example_secrets_folder_is_ignored_by_git() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for name in ("inventory/secrets/pi-password", "inventory/secrets/vps-sudo-password"):
        result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", name])
        assert result.returncode == 0, f"{name} is not ignored by git"


def test_migrate_leftovers_are_ignored_by_git() -> None:
    """migrate writes the inventory as it was (hosts.yml.bak) and what is left of a move (hosts.migrate.yml)
    beside the inventory: both describe the hosts, like hosts.yml, so git must ignore them wherever it is."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    written = []
    for inventory in (Path("inventory/hosts.yml"), Path("inventory/lab.yml"), Path("fleet/office.yml")):
        state = state_file(inventory)
        written += [backup_path(inventory), state, state.with_name(state.name + ".tmp"),
                    inventory.with_name(inventory.name + ".tmp")]
    for name in map(str, written):
        result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", name])
        assert result.returncode == 0, f"{name} is not ignored by git"


def test_a_side_files_copy_left_by_a_failed_rename_is_ignored_by_git(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The port lock file and the revoked list are written whole to a copy beside them, then renamed over them: a
    copy left when the rename fails names the hosts and their ports, so git must ignore it wherever it is (by
    .gitignore's '*.yml.tmp'; asked of git itself in a git checkout, mutmut's copy of the tree is none)."""
    git = shutil.which("git") is not None and (ROOT / ".git").exists()

    def fail(source: Path, target: Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sidefile, "os", SimpleNamespace(replace=fail))
    for inventory in (Path("inventory/hosts.yml"), Path("fleet/office.yml")):
        for side in (ports_file(inventory), revoked_file(inventory)):
            folder = tmp_path / side.parent
            folder.mkdir(parents=True, exist_ok=True)
            with pytest.raises(OSError):
                sidefile.write_side_file(folder / side.name, "# header\n", {"main": {"pi1/ssh": 20000}})
            [left] = folder.iterdir()
            assert left.read_text() == "# header\nmain:\n  pi1/ssh: 20000\n"
            left.unlink()
            assert fnmatch.fnmatch(left.name, "*.yml.tmp"), left.name
            name = str(side.with_name(left.name))
            if git:
                result = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", name])
                assert result.returncode == 0, f"{name} is not ignored by git"


def test_example_puts_its_secrets_in_the_ignored_folder() -> None:
    text = (ROOT / "inventory" / "example.yml").read_text()
    assert "secrets/pi-password" in text and "chmod 600" in text


def test_credentials_repr_hides_both_passwords() -> None:
    creds = Credentials(login_password=LOGIN, sudo_password=SUDO)
    for text in (repr(creds), str(creds), f"{creds!r}"):
        assert LOGIN not in text and SUDO not in text
    assert repr(creds) == "Credentials(login_password=<hidden>, sudo_password=<hidden>)"
    assert repr(Credentials()) == "Credentials(login_password=None, sudo_password=None)"


def test_remote_repr_hides_passwords_even_with_a_connection(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yml"
    path.write_text("vps:\n  main:\n    address: 203.0.113.1\n")
    spec = load_inventory(path, save_allocations=False).vps["main"]
    remote = Remote(spec, tmp_path / "known_hosts", Credentials(login_password=LOGIN, sudo_password=SUDO))
    remote._conn = Connection("203.0.113.1", connect_kwargs={"password": LOGIN})  # not opened
    text = repr(remote)
    assert "Remote(spec=" in text and LOGIN not in text and SUDO not in text


def test_lab_password_files_are_private_even_if_an_old_lab_left_them_open(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core, "SECRETS", tmp_path / "secrets")
    plan = make_plan(2)
    (tmp_path / "secrets").mkdir()
    old = secret(tmp_path / "secrets", f"{plan.pis[0].name}.password", 0o644)
    passwords = core._passwords(plan)
    assert passwords[plan.pis[0].name] == "s3cret"
    for host in plan.pis:
        assert (tmp_path / "secrets" / f"{host.name}.password").stat().st_mode & 0o777 == 0o600
    assert old.stat().st_mode & 0o777 == 0o600


def test_lab_inventory_with_its_secret_files_loads_from_a_folder_others_can_enter(
        shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The lab's own writers (key, passwords, inventory) produce files the secret checks accept, even where
    other users can reach the folder: as /var/lib/pitunnel-lab is (0755)."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    monkeypatch.setattr(core, "KEYS", shared / "keys")
    monkeypatch.setattr(core, "SECRETS", shared / "secrets")
    monkeypatch.setattr(core, "LAPTOP_KEY", shared / "keys" / "laptop_ed25519")
    monkeypatch.setattr(core, "KNOWN_HOSTS", shared / "known_hosts")
    plan = make_plan(2)
    core._laptop_key()
    path = shared / "lab.yml"
    core._write_inventory(plan, path, core._passwords(plan))
    (shared / "keys").chmod(0o755)  # the files themselves must be private, not only their folders
    (shared / "secrets").chmod(0o755)
    inv = load_inventory(path, save_allocations=False)
    assert [pi.password_file for pi in inv.pis.values()] == [shared / "secrets" / f"{p.name}.password"
                                                            for p in plan.pis]
