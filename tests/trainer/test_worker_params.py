"""A job's params reach the worker as the contract's JobParams: a bad value fails the job naming the field, and
an absent int8 takes the mode's default (full: on, quick: off)."""

from __future__ import annotations

import pytest

from camfleet_trainer.data import DatasetError
from camfleet_trainer.worker import _int8, _job_params


def test_params_are_typed() -> None:
    params = _job_params({"epochs": 3, "gpu": True, "backbone": "tf_efficientnet_lite0"})
    assert params.epochs == 3 and params.gpu is True and params.backbone == "tf_efficientnet_lite0"
    assert _int8(params, True) is True and _int8(params, False) is False
    assert _int8(_job_params({"int8": False}), True) is False


@pytest.mark.parametrize(
    ("params", "named"),
    [({"int8": "yes"}, "params.int8='yes'"), ({"epochs": 0}, "params.epochs=0"), ({"colour": 1}, "params.colour")],
)
def test_a_bad_param_fails_the_job_naming_it(params: dict[str, object], named: str) -> None:
    with pytest.raises(DatasetError, match=named.replace(".", r"\.")):
        _job_params(params)
