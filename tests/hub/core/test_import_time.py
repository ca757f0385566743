"""Importing the hub does no work: no password hash is computed at import (the dummy hashes that keep unknown
names as slow as known ones are made on first use)."""

from __future__ import annotations

import subprocess
import sys

COUNT_HASHES = """
import hashlib
calls = []
for name in ("scrypt", "pbkdf2_hmac"):
    real = getattr(hashlib, name)
    setattr(hashlib, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
import camfleet_hub.auth.mqtt_accounts, camfleet_hub.auth.passwords as passwords
print(len(calls))
passwords.burn_time("not-a-password")
print(len(calls))
"""


def test_no_password_hash_is_computed_at_import() -> None:
    out = subprocess.run([sys.executable, "-c", COUNT_HASHES], capture_output=True, text=True, timeout=120, check=True)
    at_import, after_first_use = out.stdout.split()
    assert at_import == "0", out.stdout
    assert int(after_first_use) >= 2  # the dummy hash, then the verification against it
