"""One config file per process (TOML) with environment overrides (pydantic-settings), validated by pydantic."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_settings import EnvSettingsSource, SettingsError

S = TypeVar("S", bound=BaseModel)
# A TOML table or environment overrides before validation: values of any JSON/TOML type, checked by pydantic.
RawTable = dict[str, object]


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file, key and value."""


# Field names whose values are never echoed in an error, whatever their type.
_SECRET_WORDS = ("password", "secret", "token", "key", "credential")


def _leaf_annotation(model: type[BaseModel] | None, path: list[str]) -> Any:
    """The annotation of the field at `path` (lower-case names) inside `model`; None when unknown."""
    annotation: Any = model
    for part in path:
        annotation = _model_of(annotation)
        if annotation is None:
            return None
        fields = {name.lower(): f for name, f in annotation.model_fields.items()}
        fields.update({f.alias.lower(): f for f in annotation.model_fields.values() if f.alias})
        if part not in fields:
            return None
        annotation = fields[part].annotation
    return annotation


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `annotation` (``Section``, ``Section | None``), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) in (Union, UnionType):
        models = [m for m in (_model_of(a) for a in get_args(annotation)) if m is not None]
        return models[0] if len(models) == 1 else None
    return None


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping (a process passes os.environ).

    PREFIX__SECTION__KEY=value → {"section": {"key": value}}. A string field takes the value verbatim ("1e3",
    "null", "0123" stay strings); tables and lists are JSON; pydantic validates the rest.
    """

    def __init__(self, model: type[BaseModel], prefix: str, environ: Mapping[str, str]) -> None:
        self._environ = environ
        # pydantic-settings reads only the model's fields and config, so a plain model (not BaseSettings) serves
        super().__init__(model, case_sensitive=False, env_prefix=prefix + "__", env_nested_delimiter="__")  # type: ignore[arg-type]

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._environ.items()}


def _env_overrides(prefix: str, environ: Mapping[str, str], model: type[BaseModel]) -> RawTable:
    """The overrides in `environ`; a variable with our prefix that names no setting is an error, not ignored."""
    head = prefix.upper() + "__"
    for name in environ:
        if name.upper().startswith(head):
            path = [p.lower() for p in name[len(head) :].split("__") if p]
            if not path or _leaf_annotation(model, path[:1]) is None:
                raise ConfigError(f"environment variable {name} names no setting")
    try:
        return _Environment(model, prefix.upper(), environ)()
    except SettingsError as exc:
        raise ConfigError(f"environment override: {exc}") from None


def _is_secret(model: type[BaseModel], loc: tuple[Any, ...]) -> bool:
    """Whether the value at `loc` must not be echoed: a SecretStr field or a field named like a secret."""
    names = [str(p).lower() for p in loc]
    if any(word in n for n in names for word in _SECRET_WORDS):
        return True
    annotation = _leaf_annotation(model, [n for n in names if not n.isdigit()])
    return annotation is not None and "SecretStr" in repr(annotation)


def _describe(model: type[BaseModel], error: Any) -> str:
    """One validation problem: field path, message and the offending value unless it is a secret or a table."""
    loc = tuple(error["loc"])
    where = ".".join(str(p) for p in loc) or "(whole config)"
    value = error.get("input")
    if not loc or _is_secret(model, loc) or isinstance(value, (dict, list)):
        return f"{where}: {error['msg']}"
    return f"{where}: {error['msg']} (got {value!r})"


def _merge(base: RawTable, over: RawTable) -> RawTable:
    merged = dict(base)
    for key, value in over.items():
        current = merged.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = _merge(current, value)
        else:
            merged[key] = value
    return merged


def load_config(
    model: type[S], path: str | Path | None, env_prefix: str, environ: Mapping[str, str] | None = None
) -> S:
    """Read `path` (optional), apply `{env_prefix}__…` overrides, validate."""
    data: RawTable = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    data = _merge(data, _env_overrides(env_prefix, os.environ if environ is None else environ, model))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(_describe(model, e) for e in exc.errors(include_url=False))
        raise ConfigError(f"invalid configuration ({where} + {env_prefix}__* environment): {problems}") from None
