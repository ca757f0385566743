"""ed25519 keys and signatures (PyNaCl), as hex strings so they fit in JSON and config files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey


class SignatureError(ValueError):
    """A signature does not verify, or a key is malformed."""


def generate_signing_key() -> str:
    """A new ed25519 private key: its 32-byte seed as 64 hex characters."""
    return bytes(SigningKey.generate()).hex()


def _signing_key(private_key_hex: str) -> SigningKey:
    try:
        return SigningKey(bytes.fromhex(private_key_hex.strip()))
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"signing key is not a 32-byte hex seed ({exc})") from None


def public_key_of(private_key_hex: str) -> str:
    return bytes(_signing_key(private_key_hex).verify_key).hex()


def fingerprint(public_key_hex: str) -> str:
    """sha256 of the raw 32-byte public key, hex: short enough to pin in a config file, and checkable."""
    try:
        raw = bytes(VerifyKey(bytes.fromhex(public_key_hex.strip())))
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"public key is not 32 hex-encoded bytes ({exc})") from None
    return hashlib.sha256(raw).hexdigest()


def load_or_create_key(path: str | Path) -> str:
    """Read the private key at `path`, creating it (mode 0600) on first use."""
    path = Path(path)
    if path.exists():
        key = path.read_text().strip()
        _signing_key(key)
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_signing_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    return key


def sign(data: bytes, private_key_hex: str) -> str:
    return _signing_key(private_key_hex).sign(data).signature.hex()


def verify(data: bytes, signature_hex: str, public_key_hex: str) -> None:
    """Raises SignatureError unless `signature_hex` is a valid signature of `data` by that key."""
    try:
        key = VerifyKey(bytes.fromhex(public_key_hex.strip()))
        key.verify(data, bytes.fromhex(signature_hex.strip()))
    except BadSignatureError:
        raise SignatureError("signature does not match the data and key") from None
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"malformed key or signature ({exc})") from None
