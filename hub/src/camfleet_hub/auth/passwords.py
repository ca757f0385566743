"""Password hashing with scrypt (a slow, memory-hard KDF) and secrets for tokens and sessions.

Stored format: ``scrypt$n$r$p$salt_hex$hash_hex``, e.g. ``scrypt$16384$8$1$9f…$3a…``; the parameters travel
with the hash, so stronger settings later still verify old hashes.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
MAX_PASSWORD_CHARS = 1024
# n*r*128 bytes of memory; bounded so a tampered row cannot make verification allocate gigabytes.
MAX_SCRYPT_N = 2**20
TOKEN_PREFIX = "cf_"


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    maxmem = 128 * n * r * p + 2 * 1024 * 1024
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES, maxmem=maxmem)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """The KDF string for ``password`` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    return f"scrypt${n}${r}${p}${salt.hex()}${_scrypt(password, salt, n, r, p).hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the stored KDF string (constant-time compare; malformed → False)."""
    try:
        kind, n_s, r_s, p_s, salt_hex, hash_hex = stored.split("$")
        n, r, p = int(n_s), int(r_s), int(p_s)
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(hash_hex)
    except ValueError:
        return False
    if kind != "scrypt" or not (1 < n <= MAX_SCRYPT_N) or not (0 < r <= 32) or not (0 < p <= 16):
        return False
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)


@functools.cache
def _dummy_hash() -> str:
    """A hash of a throw-away password: logins for unknown users verify against it so they take as long as real
    ones. Made on first use, not at import (a scrypt hash costs real time)."""
    return hash_password(secrets.token_urlsafe(16))


def burn_time(password: str) -> None:
    """Spend one verification's worth of time (unknown user), so timing does not reveal which names exist."""
    verify_password(password, _dummy_hash())


def new_secret() -> str:
    """A random bearer secret (API token or session cookie): 256 bits, URL-safe."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def secret_digest(secret: str) -> str:
    """What the database keeps of a secret: its sha256, hex."""
    return hashlib.sha256(secret.encode()).hexdigest()


def random_password() -> str:
    return secrets.token_urlsafe(12)
