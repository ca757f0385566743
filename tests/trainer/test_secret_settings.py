"""The trainer's hub token is a SecretStr: never in the settings' repr, str or dump, still sent to the hub."""

from __future__ import annotations

from camfleet_contract.config import load_config
from camfleet_trainer.config import TrainerSettings
from camfleet_trainer.worker import _token

SECRET = "cf_0123456789abcdef"


def test_api_token_is_never_printed() -> None:
    s = load_config(TrainerSettings, None, "CAMFLEET_TRAINER", {"CAMFLEET_TRAINER__API_TOKEN": SECRET})
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert SECRET not in text
    assert _token(s) == SECRET  # what the worker's HubClient gets
    assert _token(TrainerSettings()) is None
