"""One config file per process (TOML) with environment overrides, validated by pydantic."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from enum import Enum
from pathlib import Path, PurePath
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError

S = TypeVar("S", bound=BaseModel)
# A TOML table or environment overrides before validation: values of any JSON/TOML type, checked by pydantic.
RawTable = dict[str, object]


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file, key and value."""


# Field names whose values are never echoed in an error, whatever their type.
_SECRET_WORDS = ("password", "secret", "token", "key", "credential")


def _accepts_plain_string(annotation: Any) -> bool:
    """Whether a field of this type takes an environment value verbatim (str, SecretStr, Path, str enums, …)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _accepts_plain_string(get_args(annotation)[0])
    if origin in (Union, UnionType):
        return any(_accepts_plain_string(arg) for arg in get_args(annotation) if arg is not type(None))
    if origin is Literal:
        return all(isinstance(arg, str) for arg in get_args(annotation))
    return isinstance(annotation, type) and issubclass(annotation, (str, SecretStr, PurePath, Enum))


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


def _env_overrides(prefix: str, environ: Mapping[str, str], model: type[BaseModel] | None = None) -> RawTable:
    """PREFIX__SECTION__KEY=value → {"section": {"key": value}}.

    Typed by the model: a field that takes a string gets the value verbatim ("1e3", "null", "0123" stay strings);
    other fields (numbers, booleans, lists, tables) read it as JSON when it parses, else verbatim, and pydantic
    validates the result.
    """
    out: RawTable = {}
    head = prefix.upper() + "__"
    for name, raw in environ.items():
        if not name.upper().startswith(head):
            continue
        path = [p.lower() for p in name[len(head) :].split("__") if p]
        if not path:
            continue
        value: Any = raw
        if not _accepts_plain_string(_leaf_annotation(model, path)):
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
            node = child
        node[path[-1]] = value
    return out


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
