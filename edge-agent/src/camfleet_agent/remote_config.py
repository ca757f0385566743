"""The hub-signed settings: verified with the fleet key, validated, persisted, applied, version reported.

The hub publishes a `SignedConfig` retained on `agents/{agent}/config`. The agent accepts it only when the
fleet key signed it, it names this site and agent, and its version is not below the one applied (no replay
of older settings). An accepted one is written to `data_dir/config.signed.json` (atomic rename) and checked
again at start, so the settings survive a restart and a tampered file is refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from camfleet_contract.agent_config import AgentConfig
from camfleet_contract.messages import AgentConfigDocument, MessageError, SignedConfig, from_json
from camfleet_contract.signing import SignatureError, verify

log = logging.getLogger(__name__)

CONFIG_FILE = "config.signed.json"


class ConfigRefused(ValueError):
    """A config message was not accepted; the message says why (signature, target, version, schema)."""


class _AlreadyApplied(ConfigRefused):
    """The retained message again (every reconnect re-delivers it): nothing to do, nothing to report."""


class RemoteConfig:
    """Holds the applied hub settings of this agent."""

    def __init__(
        self,
        data_dir: Path,
        site: str,
        agent: str,
        public_key: Callable[[], str],
        on_apply: Callable[[AgentConfig], None],
    ) -> None:
        self.path = data_dir / CONFIG_FILE
        self.site = site
        self.agent = agent
        self._public_key = public_key
        self._on_apply = on_apply
        self.applied: AgentConfig | None = None
        self.refused = 0
        self.last_error: str | None = None

    @property
    def version(self) -> int | None:
        return self.applied.version if self.applied is not None else None

    def load(self) -> AgentConfig | None:
        """Re-verify and apply the settings stored by an earlier run (None when there are none or they fail)."""
        if not self.path.exists():
            return None
        try:
            config = self._verify(self.path.read_bytes(), allow_same=True)
        except (OSError, ConfigRefused) as exc:
            self._refuse(f"stored settings {self.path} refused: {exc}")
            return None
        self._apply(config)
        return config

    def reload(self) -> str:
        """Apply the stored settings again (the `reload` command)."""
        if self.load() is None:
            return "no stored hub settings"
        return f"settings version {self.version} applied again"

    def submit(self, payload: bytes) -> bool:
        """A message from the config topic; True when it was applied. Never raises: a refusal is logged."""
        try:
            config = self._verify(payload, allow_same=False)
        except _AlreadyApplied:
            return False
        except ConfigRefused as exc:
            self._refuse(str(exc))
            return False
        try:
            self._persist(payload)
        except OSError as exc:  # apply anyway: running the hub's settings matters more than keeping them
            log.error("config: settings version %d applied but not stored: %s", config.version, exc)
        self._apply(config)
        return True

    def _verify(self, payload: bytes, allow_same: bool) -> AgentConfig:
        try:
            signed = from_json(SignedConfig, payload)
        except MessageError as exc:
            raise ConfigRefused(f"not a signed config: {exc}") from None
        key = self._public_key()
        try:
            verify(signed.config.encode(), signed.signature, key)
        except SignatureError as exc:
            raise ConfigRefused(f"signature refused: {exc} (not signed by the fleet key)") from None
        try:
            doc = from_json(AgentConfigDocument, signed.config)
        except MessageError as exc:
            raise ConfigRefused(f"invalid settings: {exc}") from None
        if (doc.site, doc.agent) != (self.site, self.agent):
            raise ConfigRefused(f"settings are for {doc.site}/{doc.agent}, not this agent {self.site}/{self.agent}")
        current = self.version
        if current is not None and doc.config.version == current and not allow_same:
            raise _AlreadyApplied(f"version={current} is applied already")
        if current is not None and doc.config.version < current:
            raise ConfigRefused(f"version={doc.config.version} is not newer than the applied version {current}")
        return doc.config

    def _persist(self, payload: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def _apply(self, config: AgentConfig) -> None:
        self.applied = config
        self.last_error = None
        log.info("config: settings version %d applied (%d camera(s))", config.version, len(config.cameras))
        self._on_apply(config)

    def _refuse(self, why: str) -> None:
        self.refused += 1
        self.last_error = why
        log.warning("config: %s", why)
