"""Property-based and schema fuzzing, bounded so the suite stays fast.

- schemathesis over the hub's OpenAPI document, in-process (ASGI): no crash (5xx other than a deliberate 503),
  and every successful answer matches its documented schema. Error answers are ``{"detail": "..."}`` while
  FastAPI documents 422 as a list of validation errors; issue 14 fixes the documented error shape, so until then
  only 2xx answers are checked against the schema.
- hypothesis on the frame envelope decoder and the bundle reader: arbitrary bytes never raise anything but the
  documented ``EnvelopeError`` / ``BundleError``.
"""

from __future__ import annotations

import io
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import response_schema_conformance

from camfleet_contract.bundle import KNOWN_FILES, BundleError, unpack_bundle, verify_bundle
from camfleet_contract.envelope import EnvelopeError, decode_frame, encode_frame, new_header
from tests.security.world import World

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


# --------------------------------------------------------------------------- schemathesis over the REST API


def test_api_fuzz(world: World) -> None:
    """Random valid-and-invalid requests to every operation with the every-site admin token (the widest reach a
    token has), a few examples each. Driven by hand: schemathesis' pytest plugin does not load under pytest 9."""
    api = schemathesis.openapi.from_asgi("/openapi.json", world.app)
    auth = {"Authorization": f"Bearer {world.admin_token}"}
    failures: list[str] = []
    operations = 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(operation.as_strategy())
        def run(case: Any) -> None:
            response = case.call(headers=auth)
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:200]}")
            elif 200 <= response.status_code < 300:
                try:
                    case.validate_response(response, checks=[response_schema_conformance])
                except Exception as exc:  # schemathesis raises a group of check failures
                    failures.append(f"{case.method} {case.formatted_path}: off-schema answer: {str(exc)[:300]}")

        run()
    assert operations >= 70
    assert not failures, "\n".join(failures[:20])


# --------------------------------------------------------------------------- frame envelope


@FUZZ
@given(st.binary(max_size=4096))
def test_envelope_decoder_arbitrary_bytes(payload: bytes) -> None:
    try:
        decode_frame(payload)
    except EnvelopeError:
        pass


def _valid_frame() -> bytes:
    header = new_header(agent="agent-1", site="site-a", camera="cam1", jpeg=b"\xff\xd8jpeg\xff\xd9", width=4, height=4)
    return encode_frame(header, b"\xff\xd8jpeg\xff\xd9")


@FUZZ
@given(st.data())
def test_envelope_decoder_mutated_frames(data: st.DataObject) -> None:
    """A real frame with bytes flipped, cut or appended: decoded or refused with EnvelopeError, nothing else."""
    frame = bytearray(_valid_frame())
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(frame) - 1))
        frame[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(frame)))
    tail = data.draw(st.binary(max_size=64))
    try:
        decode_frame(bytes(frame[:cut]) + tail)
    except EnvelopeError:
        pass


# --------------------------------------------------------------------------- bundle reader


def _read_bundle(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        try:
            verify_bundle(unpack_bundle(data, Path(tmp) / "b"), "00" * 32)
        except BundleError:
            pass


@FUZZ
@given(st.binary(max_size=4096))
def test_bundle_reader_arbitrary_bytes(data: bytes) -> None:
    _read_bundle(data)


NAMES = st.one_of(st.sampled_from(sorted(KNOWN_FILES)), st.text(min_size=1, max_size=20))


@FUZZ
@given(
    st.lists(st.tuples(NAMES, st.binary(max_size=256)), max_size=6),
    st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
)
def test_bundle_reader_arbitrary_zips(entries: list[tuple[str, bytes]], compression: int) -> None:
    """Zips of known and unknown names (traversal, duplicates, junk manifests): only BundleError."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", compression=compression) as zf:
        warnings.simplefilter("ignore", UserWarning)  # duplicate names are part of the test
        for name, content in entries:
            try:
                zf.writestr(name, content)
            except (ValueError, IndexError):  # names zipfile itself cannot write (IndexError: a name of NULs only)
                continue
    _read_bundle(buf.getvalue())


@FUZZ
@given(st.binary(min_size=1, max_size=2048), st.integers(0, 10_000))
def test_bundle_reader_corrupted_zip(junk: bytes, where: int) -> None:
    """A valid-looking zip with a span overwritten (bad CRCs, headers, sizes): only BundleError."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("manifest.json", b'{"classifier": "c"}' * 20)
        zf.writestr("model.onnx", bytes(range(256)) * 4)
    data = bytearray(buf.getvalue())
    where %= len(data)
    data[where : where + len(junk)] = junk
    _read_bundle(bytes(data))
