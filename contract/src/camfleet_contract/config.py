"""One config file per process (TOML) with environment overrides, validated by pydantic."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

S = TypeVar("S", bound=BaseModel)


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file, key and value."""


def _env_overrides(prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """PREFIX__SECTION__KEY=value → {"section": {"key": value}}; values parse as JSON when they can."""
    out: dict[str, Any] = {}
    head = prefix.upper() + "__"
    for name, raw in environ.items():
        if not name.upper().startswith(head):
            continue
        path = [p.lower() for p in name[len(head) :].split("__") if p]
        if not path:
            continue
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name} conflicts with another override")
        node[path[-1]] = value
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(
    model: type[S], path: str | Path | None, env_prefix: str, environ: Mapping[str, str] | None = None
) -> S:
    """Read `path` (optional), apply `{env_prefix}__…` overrides, validate."""
    data: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path} cannot be read: {exc}") from None
    data = _merge(data, _env_overrides(env_prefix, os.environ if environ is None else environ))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']} (got {e.get('input')!r})" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration ({where} + {env_prefix}__* environment): {problems}") from None
