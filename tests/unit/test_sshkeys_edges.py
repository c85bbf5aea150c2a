"""The public key parser at its edges: the exact limits (RSA's 2048 bits, the longest key accepted), the
security-key types, what a refusal prints of untrusted text."""

from __future__ import annotations

import pytest

from pitunnel.sshkeys import MAX_BLOB, BadPublicKey, parse_public_key
from tests.unit.test_sshkeys import ED, blob


def refusal(text: str) -> str:
    with pytest.raises(BadPublicKey) as refused:
        parse_public_key(text)
    return str(refused.value)


def test_rsa_of_exactly_2048_bits_passes_and_one_byte_less_does_not() -> None:
    e = bytes([1, 0, 1])
    assert parse_public_key("ssh-rsa " + blob(b"ssh-rsa", e, b"\0" + b"\x80" * 256)).keytype == "ssh-rsa"
    assert refusal("ssh-rsa " + blob(b"ssh-rsa", e, b"\0\0" + b"\x80" * 255)) == "RSA key shorter than 2048 bits"


def test_the_longest_key_text_accepted() -> None:
    limit = MAX_BLOB * 4 // 3 + 4
    assert "too long" not in refusal("ssh-rsa " + "A" * limit)
    assert refusal("ssh-rsa " + "A" * (limit + 1)) == f"key too long ({limit + 1} characters)"


def test_security_keys_parse_with_their_application() -> None:
    sk = parse_public_key("sk-ssh-ed25519@openssh.com " + blob(b"sk-ssh-ed25519@openssh.com", b"k" * 32, b"ssh:"))
    assert sk.keytype == "sk-ssh-ed25519@openssh.com"
    ecdsa = "sk-ecdsa-sha2-nistp256@openssh.com"
    assert parse_public_key(f"{ecdsa} " + blob(ecdsa.encode(), b"nistp256", b"p" * 65, b"ssh:")).keytype == ecdsa
    assert refusal(f"{ecdsa} " + blob(ecdsa.encode(), b"nistp384", b"p" * 65, b"ssh:")) == \
        f"{ecdsa} key on the wrong curve 'nistp384'"


@pytest.mark.parametrize(("text", "message"), [
    (f"ecdsa-sha2-nistp521 {blob(b'ecdsa-sha2-nistp521', b'nistp256', b'p')}",
     "ecdsa-sha2-nistp521 key on the wrong curve 'nistp256'"),
    (f"ssh-ed25519 {blob(b'')}", "the key's data says '', not ssh-ed25519"),
    (f"ssh-ed25519 {blob(b'ssh-ed25519')}", "ssh-ed25519 key with 0 fields, not 1"),
    (f"ssh-ed25519 {blob(b'ssh-ed25519', b'x' * 33)}", "an ed25519 key is 32 bytes, this one 33"),
    ("ssh-ed25519", "ssh-ed25519 without its key"),
    ("ssh-ed25519 AAAA", "the key's data is not a sequence of SSH strings (truncated or padded)"),
    ("ssh-ed25519 A===", "the key is not valid base64"),
    ("x" * 41, f"unknown key type {'x' * 40 + '...'!r} (options before the key are not accepted)"),
    ("x" * 40, f"unknown key type {'x' * 40!r} (options before the key are not accepted)"),
    (f"{ED} a\x7fb", "holds a newline or another control character: not one key line"),
    (f"{ED} a\x1fb", "holds a newline or another control character: not one key line"),
])
def test_each_refusal_says_exactly_why(text: str, message: str) -> None:
    assert refusal(text) == message


def test_tabs_and_spaces_between_the_words_are_fine() -> None:
    keytype, b64 = ED.split()
    assert parse_public_key(f"\t{keytype}\t{b64}\tmy comment ").line == ED
    assert parse_public_key(f"{keytype} {b64} \x20").base64 == b64


def test_the_blobs_strings_must_end_exactly() -> None:
    whole = blob(b"ssh-ed25519", b"x" * 32)
    import base64
    raw = base64.b64decode(whole)
    for cut in (raw[:-1], raw + b"\0", raw + b"\0\0\0\0\0"):  # short, a stray byte, a length with no string
        assert "not a sequence of SSH strings" in refusal("ssh-ed25519 " + base64.b64encode(cut).decode())
    assert parse_public_key("ssh-ed25519 " + base64.b64encode(raw).decode()).blob == raw


def test_base64_with_a_stray_character_is_refused_not_skipped() -> None:
    keytype, b64 = ED.split()
    assert refusal(f"{keytype} {b64[:10]}!{b64[10:]}") == "the key is not valid base64"
    assert refusal("") == "empty"
