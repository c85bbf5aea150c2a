"""The laptop files an inventory names: where each path leads, that the file is there, and that a secret in it
is private (and a password file one line of text)."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Final

from .errors import Invalid, clip

MAX_SECRET_BYTES: Final = 4096  # a password file holds one line
MAX_HTPASSWD_BYTES: Final = 1 << 20


def local_file(value: str, base: Path, *, exists: bool, secret: str) -> Path:
    """The path `value` names: ~ expanded, relative to `base`; it must be a file if `exists`, and private if it
    holds a `secret` ("password", "htpasswd" or "key")."""
    try:
        path = Path(value).expanduser()
    except RuntimeError as e:  # ~user that does not exist
        raise Invalid(str(e), "use an existing home directory or an absolute path") from None
    path = path if path.is_absolute() else base / path
    try:
        if exists and not path.is_file():
            raise Invalid(f"file {clip(str(path), 256)} does not exist",
                          "create it or correct the path (relative paths start at the inventory's folder)")
        if secret:
            _check_secret(path, secret)
    except (OSError, ValueError) as e:  # a name too long, a NUL byte, a folder we may not enter
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise Invalid(f"cannot use the path {clip(str(path), 256)}: {clip(reason)}",
                      "correct the path (relative paths start at the inventory's folder)") from None
    return path


def public_key(key: Path) -> Path:
    """The public half of the private key file `key`: its name with .pub added."""
    return key.with_name(key.name + ".pub")


def _exposure(path: Path) -> str | None:
    """Who besides the owner (and root) can read or change `path`: its mode, and whether they can reach it
    (every folder above it searchable by them), as "other users" or "its group"; None if nobody."""
    real = path.resolve()
    mode = real.stat().st_mode
    others, group = bool(mode & (stat.S_IROTH | stat.S_IWOTH)), bool(mode & (stat.S_IRGRP | stat.S_IWGRP))
    for folder in real.parents:
        if not others and not group:
            break
        folder_mode = folder.stat().st_mode
        others = others and bool(folder_mode & stat.S_IXOTH)
        group = group and bool(folder_mode & stat.S_IXGRP)
    return "other users" if others else "its group" if group else None


def _check_secret(path: Path, kind: str) -> None:
    """Refuse a secret file that others can read or change, as ssh does for private keys; and a password file
    that is not one line of UTF-8 text (read here, never shown)."""
    who = _exposure(path)
    if who is not None:
        mode = stat.S_IMODE(path.resolve().stat().st_mode)
        raise Invalid(f"{clip(str(path), 256)} holds a secret but {who} can read or change it (mode {mode:04o})",
                      f"chmod 600 {path}")
    if kind == "key":
        return  # paramiko reads it
    limit = MAX_SECRET_BYTES if kind == "password" else MAX_HTPASSWD_BYTES
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise Invalid(f"{clip(str(path), 256)} is bigger than {limit} bytes",
                      "put only the password in it, on one line" if kind == "password" else "name an htpasswd file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise Invalid(f"{clip(str(path), 256)} is not UTF-8 text (byte {e.start + 1} is not)",
                      "save it as UTF-8 text" + (", the password on one line" if kind == "password" else "")) from None
    if kind == "password":
        password = text.rstrip("\n")
        if not password:
            raise Invalid(f"{clip(str(path), 256)} is empty", "put the password in it, on one line")
        if "\n" in password or "\r" in password:
            raise Invalid(f"{clip(str(path), 256)} holds more than one line (or a carriage return)",
                          "put only the password in it, on one line with a Unix line ending")
