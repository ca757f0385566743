"""Importing the hub does no work: no password hash is computed at import (the dummy hashes that keep unknown
names as slow as known ones are made on first use); and every hub module imports on its own, in any order (no
circular import hides behind the app's own import order)."""

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


# Each module in a fresh fork with no camfleet_hub module loaded yet (the third-party libraries are, to keep it quick).
IMPORT_EACH = """
import os, pkgutil, sys
import camfleet_hub
found = pkgutil.walk_packages(camfleet_hub.__path__, "camfleet_hub.")
names = sorted(m.name for m in found if ".migrations." not in m.name)
for loaded in [k for k in sys.modules if k.startswith("camfleet_hub")]:
    del sys.modules[loaded]
import fastapi, numpy, paho.mqtt.client, PIL.Image, pydantic, sqlalchemy
failed = []
for name in names:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(name)
        except BaseException as exc:
            print(f"{name}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    if os.waitpid(pid, 0)[1] != 0:
        failed.append(name)
print(len(names), " ".join(failed))
"""


def test_every_hub_module_imports_on_its_own() -> None:
    """`ingest/__init__` once imported its worker eagerly, which imports the fleet's event rules, which import
    `ingest.validate`: `import camfleet_hub.fleet.service` alone (and three more modules) failed as circular."""
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    count, *failed = out.stdout.split()
    assert int(count) > 100 and not failed, out.stderr[-3000:]
