"""The older tools' free-text ids (``temple_id``, ``category``) as camfleet names, and back.

The temple server used them as folder names, so its users write ``"Door closed"`` or ``"None of the categories"``
(its documentation recommends that one). camfleet's names (sites, groups) must be safe in MQTT topics, paths and
URLs. A text that already is a valid name is used unchanged; any other one is escaped reversibly: each byte of a
character other than a letter, a digit, ``_`` or ``-`` becomes ``.XX`` (its UTF-8 bytes in hex, so a space is
``.20``), and answers turn such a group name back into the client's own text.
"""

from __future__ import annotations

import re

from camfleet_contract.topics import NAME_RE
from camfleet_hub.core.errors import InvalidError

MAX_LEN = 64
_PLAIN = re.compile(r"[A-Za-z0-9_-]")
_ESCAPE = re.compile(r"\.([0-9A-F]{2})")


def _escaped(text: str) -> str:
    out = []
    for i, char in enumerate(text):
        plain = _PLAIN.fullmatch(char) and (i > 0 or char.isalnum())  # a name starts with a letter or digit
        out.append(char if plain else "".join(f".{b:02X}" for b in char.encode()))
    return "".join(out)


def as_name(text: str, field: str) -> str:
    """``text`` unchanged when it is a valid name, else escaped; refused when empty or too long once escaped."""
    if not text:
        raise InvalidError(f"{field}: empty; give a non-empty text")
    if NAME_RE.fullmatch(text):
        return text
    name = _escaped(text)
    if len(name) > MAX_LEN:
        raise InvalidError(
            f"{field}={text!r}: too long; with its spaces and other characters escaped it takes {len(name)} "
            f"of the {MAX_LEN} characters a name may have"
        )
    return name


def from_name(name: str) -> str:
    """The client's text of a name ``as_name`` escaped; every other name comes back unchanged."""
    if "." not in name:
        return name
    try:
        text = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), name).encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return name
    if NAME_RE.fullmatch(text) or _escaped(text) != name:
        return name  # not one of our escapes (e.g. a group named "v1.2" in the web UI)
    return text
