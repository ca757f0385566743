"""The older tools' routes at their old paths: ``GET /cv`` and ``POST /api/{save_data,make_model,predict}``.

Authentication is the hub's own: ``Authorization: Bearer <token>`` (an API token made for the old client, with the
role its calls need) or a logged-in session. Refusals keep the old answer shapes (``error_msg``) with a 4xx status:
the temple routes answer 400 for every bad request (unknown ``temple_id`` included), as their documentation says;
401, 403, 413 and 503 keep their meaning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from starlette.concurrency import run_in_threadpool

from camfleet_hub.auth.deps import get_current_user
from camfleet_hub.compat import model_making, predicting, storing, temples
from camfleet_hub.compat.schemas import (
    CvAnswer,
    MakeModelAnswer,
    MakeModelRequest,
    PredictAnswer,
    PredictRequest,
    SaveDataAnswer,
    SaveDataRequest,
)
from camfleet_hub.core.deps import ServicesDep, SessionDep
from camfleet_hub.core.errors import ServiceError
from camfleet_hub.core.http_errors import describe_errors

router = APIRouter(tags=["compat"])

M = TypeVar("M", bound=BaseModel)

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "bad input; `error_msg` says which field and why"},
    401: {"description": "no valid bearer token or session"},
    403: {"description": "the token's role in the site does not allow it"},
    404: {"description": "no such site or classifier"},
    413: {"description": "the body is over its limit"},
}


# Bad input by our finer statuses; the temple server answered all of it with 400 and its clients check for that.
AS_BAD_REQUEST = (404, 409, 422)


def _body(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise temples.BadRequest(_describe(exc.errors())) from None


def _describe(errors: list[ErrorDetails]) -> str:
    if any(e["type"] == "json_invalid" for e in errors):  # form-encoded or multipart: say what to send instead
        return "body: not JSON; send the documented keys as one JSON object (Content-Type: application/json)"
    return describe_errors(list(errors))


def _refusal(exc: ServiceError, shape: Callable[[str], BaseModel], detail: bool = True) -> JSONResponse:
    """The old answer shape, 400 for bad input as the temple server (401/403/413; 503 + Retry-After when busy)."""
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(retry)} if retry is not None else None
    body = shape(exc.detail).model_dump()
    if detail:
        body["detail"] = exc.detail
    status = 400 if exc.status_code in AS_BAD_REQUEST else exc.status_code
    return JSONResponse(status_code=status, content=body, headers=headers)


def _list_error(detail: str) -> BaseModel:
    return MakeModelAnswer(error_msg=[detail])


@router.post(
    "/api/save_data",
    operation_id="compat_save_data",
    response_model=SaveDataAnswer,
    responses=ERRORS,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": SaveDataRequest.model_json_schema()}}}},
)
async def save_data(request: Request, services: ServicesDep, session: SessionDep) -> Any:
    """The temple server's save_data: ``temple_id`` → site, ``category`` → group, ``train_test`` → set."""
    try:
        user = get_current_user(request, services.settings, session)
        body = _body(SaveDataRequest, await request.body())
        return await run_in_threadpool(storing.save_data, services, session, user, body)
    except ServiceError as exc:
        session.rollback()
        return _refusal(exc, lambda d: SaveDataAnswer(error_msg=d), detail=False)  # "only one key": error_msg


@router.post(
    "/api/make_model",
    operation_id="compat_make_model",
    response_model=MakeModelAnswer,
    responses=ERRORS,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": MakeModelRequest.model_json_schema()}}}},
)
async def make_model(request: Request, services: ServicesDep, session: SessionDep) -> Any:
    """Train the site's classifier now (a trainer worker does it) and wait; the stage flags say how far it got."""
    try:
        user = get_current_user(request, services.settings, session)
        body = _body(MakeModelRequest, await request.body())
        status, answer = await run_in_threadpool(
            model_making.make_model, services, session, services.runtimes, user, body
        )
    except ServiceError as exc:
        session.rollback()
        return _refusal(exc, _list_error)
    return JSONResponse(status_code=status, content=answer.model_dump())


@router.post(
    "/api/predict",
    operation_id="compat_predict",
    response_model=PredictAnswer,
    responses={**ERRORS, 503: {"description": "classification slots busy; Retry-After"}},
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": PredictRequest.model_json_schema()}}}},
)
async def predict(request: Request, services: ServicesDep, session: SessionDep) -> Any:
    """Top category per image; "No category (Anomaly)" under min_confidence or when flagged anomalous."""
    try:
        user = get_current_user(request, services.settings, session)
        services.runtimes.slots.acquire()
    except ServiceError as exc:
        return _refusal(exc, lambda d: PredictAnswer(error_msg=[d]))
    try:
        body = _body(PredictRequest, await request.body())
        return await run_in_threadpool(predicting.predict, services, session, services.runtimes, user, body)
    except ServiceError as exc:
        session.rollback()
        return _refusal(exc, lambda d: PredictAnswer(error_msg=[d]))
    finally:
        services.runtimes.slots.release()


@router.get(
    "/cv",
    operation_id="compat_cv",
    response_model=CvAnswer,
    responses=ERRORS,
    description="`/cv?PATH_OR_URL[:HOW_MANY]` or `/cv?path=…&how_many=…&site=…&classifier=…`",
)
async def cv(request: Request, services: ServicesDep, session: SessionDep) -> Any:
    """The dataset tool's REST form: ``{group: probability}`` of the top HOW_MANY groups."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    try:
        user = get_current_user(request, services.settings, session)
        services.runtimes.slots.acquire()
    except ServiceError as exc:
        return JSONResponse(status_code=exc.status_code, content={"error_msg": exc.detail, "detail": exc.detail})
    try:
        return await run_in_threadpool(predicting.cv, services, session, services.runtimes, user, raw)
    except ServiceError as exc:
        session.rollback()
        return JSONResponse(status_code=exc.status_code, content={"error_msg": exc.detail, "detail": exc.detail})
    finally:
        services.runtimes.slots.release()
