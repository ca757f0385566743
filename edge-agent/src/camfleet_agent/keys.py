"""The fleet public key that bundles must be signed with: configured, or fetched once from the hub and pinned.

A fetched key is trusted only when it matches a configured sha256 fingerprint, or came over HTTPS, or the
operator opted in to trust on first use over plain HTTP (`models.trust_on_first_use_http`): otherwise whoever
answers for the hub's address on the network the first time would choose the key.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path

from camfleet_contract.client import HubClient, HubError
from camfleet_contract.rest import FLEET_KEY
from camfleet_contract.signing import SignatureError, fingerprint

log = logging.getLogger(__name__)

PIN_FILE = "fleet.pub"
KEY_PATH = FLEET_KEY.url_path()
_HEX_KEY = re.compile(r"^[0-9a-f]{64}$")


class FleetKeyError(RuntimeError):
    """No trusted key is known yet (not configured, not pinned, hub unreachable), or the hub's is malformed."""


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class FleetKey:
    """A configured key wins; otherwise the hub's key, checked as above, is pinned in `data_dir/fleet.pub`.

    Once pinned, a different key offered by the hub is refused (logged as an error) and the pin is kept.
    """

    def __init__(
        self,
        configured: str,
        data_dir: Path,
        hub_url: str,
        timeout_s: float = 10.0,
        token: str | None = None,
        *,
        fingerprint_sha256: str = "",
        trust_on_first_use_http: bool = False,
    ) -> None:
        self.configured = configured.strip().lower()
        self.fingerprint = fingerprint_sha256.strip().lower()
        self.tofu_http = trust_on_first_use_http
        if self.configured and self.fingerprint and _fingerprint(self.configured) != self.fingerprint:
            raise FleetKeyError("the configured fleet key does not match the configured fleet key fingerprint")
        self.pin_path = Path(data_dir) / PIN_FILE
        self.hub_url = hub_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token = token
        self._lock = threading.Lock()
        self._key: str | None = self.configured or None

    def pinned(self) -> str | None:
        try:
            value = self.pin_path.read_text().strip().lower()
        except FileNotFoundError:
            return None
        if not _HEX_KEY.fullmatch(value):
            raise FleetKeyError(f"{self.pin_path} does not hold a 64-hex-character key (got {value[:80]!r})")
        if self.fingerprint and _fingerprint(value) != self.fingerprint:
            raise FleetKeyError(f"{self.pin_path} holds a key whose sha256 is not the configured fingerprint")
        return value

    def fetch(self) -> str:
        """Ask the hub for its fleet key; raises FleetKeyError unless this agent may trust the answer."""
        url = self.hub_url + KEY_PATH
        if not self.fingerprint and not url.startswith("https://") and not self.tofu_http:
            raise FleetKeyError(
                f"will not trust a fleet key fetched over plain HTTP from {url}: set fleet_public_key or "
                "models.fleet_key_sha256, use an https:// hub_url, or set models.trust_on_first_use_http = true"
            )
        try:
            with HubClient(
                self.hub_url, self.timeout_s, retries=0, token=self._token, user_agent="camfleet-agent"
            ) as hub:
                value = hub.fleet_key().public_key.strip().lower()
        except HubError as exc:
            raise FleetKeyError(f"cannot fetch the fleet key from {url}: {exc}") from None
        if not _HEX_KEY.fullmatch(value):
            raise FleetKeyError(f"the hub at {url} returned a malformed fleet key {value[:80]!r}")
        if self.fingerprint and _fingerprint(value) != self.fingerprint:
            raise FleetKeyError(
                f"the hub at {url} offers fleet key {value} whose sha256 is not the configured fingerprint "
                f"{self.fingerprint}: refused"
            )
        return value

    def get(self) -> str:
        """The trusted key: configured, pinned, or fetched now and pinned; raises FleetKeyError when unknown."""
        with self._lock:
            if self._key is None:
                pinned = self.pinned()
                self._key = pinned if pinned is not None else self._pin(self.fetch())
            return self._key

    def _pin(self, key: str) -> str:
        write_atomic(self.pin_path, (key + "\n").encode())
        log.info("fleet key %s fetched from %s and pinned in %s", key, self.hub_url, self.pin_path)
        return key

    def check_hub(self) -> None:
        """At start: compare the hub's current key with the pin; a different one is refused, loudly."""
        if self.configured:
            return
        try:
            pinned = self.pinned()
            offered = self.fetch()
        except FleetKeyError as exc:
            log.info("fleet key not checked against the hub now: %s", exc)
            return
        if pinned is None:
            with self._lock:
                if self._key is None:
                    self._key = self._pin(offered)
        elif offered != pinned:
            log.error(
                "the hub offers fleet key %s but %s pins %s: refusing the new key; bundles signed with it will be "
                "rejected (delete %s to trust the hub's new key)",
                offered,
                self.pin_path,
                pinned,
                self.pin_path,
            )


def _fingerprint(key: str) -> str:
    try:
        return fingerprint(key)
    except SignatureError as exc:
        raise FleetKeyError(str(exc)) from None
