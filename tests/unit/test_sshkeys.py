"""The strict public key parser: what a Pi reports as its key reaches the VPS's authorized_keys only if
it is exactly one well-formed key."""

from __future__ import annotations

import base64
import struct

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from pitunnel.sshkeys import BadPublicKey, PublicKey, parse_public_key


def openssh(key: object) -> str:
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()  # type: ignore[attr-defined]


ED = openssh(ed25519.Ed25519PrivateKey.generate().public_key())


def blob(*fields: bytes) -> str:
    return base64.b64encode(b"".join(struct.pack(">I", len(f)) + f for f in fields)).decode()


@pytest.mark.parametrize("line", [
    ED,
    ED + " pitunnel:pi1",
    "  " + ED + "\tcomment with spaces  \n",
    openssh(ec.generate_private_key(ec.SECP256R1()).public_key()),
    openssh(ec.generate_private_key(ec.SECP384R1()).public_key()),
    openssh(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()),
])
def test_real_keys_parse_and_keep_only_the_key(line: str) -> None:
    key = parse_public_key(line)
    assert key.line == " ".join(line.split()[:2])


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    ("   \n", "empty"),
    ("hello world", "unknown key type 'hello'"),
    ("garbage", "unknown key type"),
    ("ssh-ed25519", "without its key"),
    ("ssh-ed25519 !!!notbase64!!!", "not valid base64"),
    ("ssh-ed25519 AAAA", "not a sequence of SSH strings"),
    (f"ssh-ed25519 {blob(b'ssh-rsa', b'x' * 32)}", "says 'ssh-rsa', not ssh-ed25519"),
    (f"ssh-ed25519 {blob(b'ssh-ed25519', b'x' * 31)}", "32 bytes, this one 31"),
    (f"ssh-ed25519 {blob(b'ssh-ed25519', b'x' * 32, b'extra')}", "2 fields, not 1"),
    (f"ssh-ed25519 {blob(b'ssh-ed25519', b'x' * 32)[:-4]}", "not"),
    (f"ecdsa-sha2-nistp256 {blob(b'ecdsa-sha2-nistp256', b'nistp384', b'x' * 65)}", "wrong curve"),
    ("ssh-rsa " + blob(b"ssh-rsa", bytes([1, 0, 1]), bytes(1) + b"x" * 64), "shorter than 2048 bits"),
    (f"ssh-rsa {'A' * 20000}", "too long"),
    (f'command="sh" {ED}', "unknown key type 'command=\"sh\"'"),
    (f"restrict {ED}", "options before the key"),
    (f"{ED}\n{ED}", "newline"),
    (f"{ED} pi1\nssh-ed25519 AAAAC3 evil", "newline"),
    (f"{ED} pi1\rx", "control character"),
    (f"ssh-dss {blob(b'ssh-dss', b'p', b'q', b'g', b'y')}", "unknown key type 'ssh-dss'"),
])
def test_anything_else_is_refused_with_the_reason(text: str, why: str) -> None:
    with pytest.raises(BadPublicKey) as refused:
        parse_public_key(text)
    assert why in str(refused.value)
    assert "\n" not in str(refused.value)


def test_the_line_is_re_encoded_not_copied() -> None:
    """Base64 without its padding decodes the same, but only the canonical form is written out."""
    keytype, b64 = ED.split()
    assert parse_public_key(f"{keytype} {b64}").base64 == b64


@pytest.mark.parametrize(("keytype", "data", "why"), [
    ("ssh-ed25519", b"not-a-key", "not a sequence of SSH strings"),
    ("ssh-ed25519", base64.b64decode(blob(b"ssh-rsa", b"\1", b"\2")), "says 'ssh-rsa', not ssh-ed25519"),
    ("ssh-ed25519", base64.b64decode(blob(b"ssh-ed25519", b"short")), "32 bytes, this one 5"),
    ("ssh-dss", base64.b64decode(blob(b"ssh-dss", b"p", b"q", b"g", b"y")), "unknown key type 'ssh-dss'"),
])
def test_a_public_key_is_a_key_however_it_is_made(keytype: str, data: bytes, why: str) -> None:
    """A PublicKey is checked when it is made, not only when text is parsed: what travels as one is a key."""
    with pytest.raises(BadPublicKey, match=why):
        PublicKey(keytype, data)
    key = parse_public_key(ED)
    assert PublicKey(key.keytype, key.blob) == key
