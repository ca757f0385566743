import hashlib
import json
import struct

import pytest

from camfleet_contract.envelope import (
    MAGIC,
    EnvelopeError,
    FrameHeader,
    decode_frame,
    encode_frame,
    new_header,
)
from camfleet_contract.messages import Prediction


@pytest.fixture
def jpeg(test_data) -> bytes:
    return next((test_data / "clothing" / "train" / "hat").glob("*.jpg")).read_bytes()


def test_round_trip(jpeg: bytes) -> None:
    header = new_header("a1", "s1", "c1", jpeg, 400, 533, predictions=[Prediction(label="hat", probability=0.9)])
    header2, jpeg2 = decode_frame(encode_frame(header, jpeg))
    assert header2 == header and jpeg2 == jpeg
    assert header.sha256 == hashlib.sha256(jpeg).hexdigest()


def _with_header(raw: dict, jpeg: bytes) -> bytes:
    head = json.dumps(raw).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + jpeg


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda p, j: b"XXXX" + p[4:], "bad_magic"),
        (lambda p, j: p[:6], "truncated"),
        (lambda p, j: p[:4] + struct.pack(">I", 10**6) + p[8:], "bad_header"),
        (lambda p, j: p[:4] + struct.pack(">I", len(p)) + p[8:], "truncated"),
        (lambda p, j: p[:8] + b"{not json" + p[17:], "bad_header"),
        (lambda p, j: p[:-10] + b"\x00" * 10, "hash_mismatch"),
        (lambda p, j: p + b"extra", "hash_mismatch"),
    ],
)
def test_malformed_envelopes(jpeg: bytes, mutate, reason: str) -> None:
    payload = encode_frame(new_header("a1", "s1", "c1", jpeg, 400, 533), jpeg)
    with pytest.raises(EnvelopeError) as err:
        decode_frame(mutate(payload, jpeg))
    assert err.value.reason == reason


def test_schema_errors_name_the_field(jpeg: bytes) -> None:
    good = new_header("a1", "s1", "c1", jpeg, 400, 533).model_dump(mode="json")
    for field, value in [("site", "bad/site"), ("width", 0), ("sha256", "zz"), ("captured_at", "yesterday")]:
        with pytest.raises(EnvelopeError, match=field) as err:
            decode_frame(_with_header({**good, field: value}, jpeg))
        assert err.value.reason == "bad_header"
    with pytest.raises(EnvelopeError, match="extra"):
        decode_frame(_with_header({**good, "surprise": 1}, jpeg))


def test_not_jpeg_and_oversize(jpeg: bytes) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    header = FrameHeader(**{**new_header("a", "s", "c", png, 1, 1).model_dump()})
    with pytest.raises(EnvelopeError) as err:
        decode_frame(encode_frame(header, png))
    assert err.value.reason == "not_jpeg"
    with pytest.raises(EnvelopeError) as err:
        decode_frame(encode_frame(new_header("a", "s", "c", jpeg, 1, 1), jpeg), max_bytes=1000)
    assert err.value.reason == "oversize"
