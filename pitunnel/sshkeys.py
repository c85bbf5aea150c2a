"""A strict parser for OpenSSH public key lines (`TYPE BASE64 [COMMENT]`), for keys that come from a host
and are written into another host's authorized_keys: anything but one well-formed key is refused."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

# key type -> the SSH strings its blob holds after the type name (RFC 4253, 5656, 8709; PROTOCOL.u2f)
LAYOUT: dict[str, tuple[str, ...]] = {
    "ssh-ed25519": ("key",),
    "ssh-rsa": ("e", "n"),
    "ecdsa-sha2-nistp256": ("curve", "point"),
    "ecdsa-sha2-nistp384": ("curve", "point"),
    "ecdsa-sha2-nistp521": ("curve", "point"),
    "sk-ssh-ed25519@openssh.com": ("key", "application"),
    "sk-ecdsa-sha2-nistp256@openssh.com": ("curve", "point", "application"),
}
MAX_BLOB = 8192  # an RSA key of 16384 bits is about 2 KiB


class BadPublicKey(ValueError):
    """The text is not exactly one public key; the message says what is wrong with it."""


@dataclass(frozen=True)
class PublicKey:
    """One well-formed public key: made only from a blob that holds exactly the fields of its type (a
    PublicKey that exists is a key; BadPublicKey otherwise), so a key parsed once at the edge needs no
    second look wherever it travels."""

    keytype: str
    blob: bytes

    def __post_init__(self) -> None:
        _check_blob(self.keytype, self.blob)

    @property
    def base64(self) -> str:
        return base64.b64encode(self.blob).decode()

    @property
    def fingerprint(self) -> str:
        """As OpenSSH prints it (`ssh-keygen -l`, sshd's "Accepted publickey" line): SHA256:base64, unpadded."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    @property
    def line(self) -> str:
        """`TYPE BASE64`, re-encoded from the parsed blob: nothing of the original text but the key."""
        return f"{self.keytype} {self.base64}"


def parse_public_key(text: str) -> PublicKey:
    """One key line: a known type, strict base64 whose blob names the same type and holds exactly the
    fields of that type, and an optional comment. No options, no second line, no control characters."""
    stripped = text.strip()
    if not stripped:
        raise BadPublicKey("empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in stripped if c not in " \t"):
        raise BadPublicKey("holds a newline or another control character: not one key line")
    words = stripped.split()
    keytype = words[0]
    if keytype not in LAYOUT:
        raise BadPublicKey(f"unknown key type {_shown(keytype)} (options before the key are not accepted)")
    if len(words) < 2:
        raise BadPublicKey(f"{keytype} without its key")
    encoded = words[1]
    if len(encoded) > MAX_BLOB * 4 // 3 + 4:
        raise BadPublicKey(f"key too long ({len(encoded)} characters)")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadPublicKey("the key is not valid base64") from None
    return PublicKey(keytype, blob)


def _check_blob(keytype: str, blob: bytes) -> None:
    """Raise BadPublicKey unless `blob` is a `keytype` key: it names that type and holds exactly its fields."""
    if keytype not in LAYOUT:
        raise BadPublicKey(f"unknown key type {_shown(keytype)}")
    fields = _ssh_strings(blob)
    if fields is None:
        raise BadPublicKey("the key's data is not a sequence of SSH strings (truncated or padded)")
    inner = fields[0].decode(errors="replace") if fields else ""
    if inner != keytype:
        raise BadPublicKey(f"the key's data says {_shown(inner)}, not {keytype}")
    if len(fields) != 1 + len(LAYOUT[keytype]):
        raise BadPublicKey(f"{keytype} key with {len(fields) - 1} fields, not {len(LAYOUT[keytype])}")
    named = dict(zip(LAYOUT[keytype], fields[1:]))
    if "key" in named and len(named["key"]) != 32:
        raise BadPublicKey(f"an ed25519 key is 32 bytes, this one {len(named['key'])}")
    if "curve" in named and keytype.split("-")[-1].split("@")[0] != named["curve"].decode(errors="replace"):
        raise BadPublicKey(f"{keytype} key on the wrong curve {_shown(named['curve'].decode(errors='replace'))}")
    if "n" in named and len(named["n"].lstrip(b"\0")) * 8 < 2048:
        raise BadPublicKey("RSA key shorter than 2048 bits")


def _ssh_strings(blob: bytes) -> list[bytes] | None:
    """The blob as uint32-length-prefixed strings, consumed exactly; None if it is not that."""
    out: list[bytes] = []
    at = 0
    while at < len(blob):
        if at + 4 > len(blob):
            return None
        (size,) = struct.unpack(">I", blob[at:at + 4])
        at += 4
        if at + size > len(blob):
            return None
        out.append(blob[at:at + size])
        at += size
    return out


def _shown(text: str, limit: int = 40) -> str:
    """A piece of untrusted text, safe to print on one line."""
    cut = text[:limit] + ("..." if len(text) > limit else "")
    return repr(cut)
