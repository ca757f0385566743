"""Issue 10, hole 3 in the contract: the signed manifest names site/classifier/version, unlisted files are refused,
rollback statements and key fingerprints verify."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from camfleet_contract.bundle import (
    DEFAULT_CLASSIFIER,
    DEFAULT_SITE,
    FORMAT_VERSION,
    INDEX,
    MANIFEST,
    BundleError,
    Manifest,
    check_scope,
    sign_bundle,
    verify_bundle,
)
from camfleet_contract.rollback import RollbackStatement, sign_rollback, verify_rollback
from camfleet_contract.signing import SignatureError, fingerprint, generate_signing_key, public_key_of
from tests.support.tinybundle import make_bundle


@pytest.fixture
def key() -> str:
    return generate_signing_key()


def _manifest(site: str, classifier: str = "door", fmt: int = FORMAT_VERSION) -> Manifest:
    return Manifest.model_validate(
        {
            "format_version": fmt,
            "site": site,
            "classifier": classifier,
            "version": "3",
            "classes": ["open", "closed"],
            "backbone": "b",
            "embedding_dim": 3,
            "anomaly": {"method": "confidence", "threshold": 0.5},
        }
    )


@pytest.mark.parametrize(
    ("manifest", "site", "classifier", "error"),
    [
        (_manifest("shop"), "shop", "door", None),
        (_manifest(DEFAULT_SITE, DEFAULT_CLASSIFIER), "shop", DEFAULT_CLASSIFIER, None),
        (_manifest("shop", DEFAULT_CLASSIFIER), "shop", DEFAULT_CLASSIFIER, None),  # a site's own "imagenet"
        (_manifest("other"), "shop", "door", "site='other'"),
        (_manifest("shop"), "shop", "lights", "classifier='door'"),
        (_manifest(DEFAULT_SITE, DEFAULT_CLASSIFIER), "shop", "door", "classifier='imagenet'"),
        (_manifest(DEFAULT_SITE, "door"), "shop", "door", "site='\\*'"),  # "*" only as the default classifier
        (_manifest(""), "shop", "door", "site=''"),
        (_manifest("shop", fmt=1), "shop", "door", "format_version=1 names no site"),
    ],
    ids=[
        "own",
        "default",
        "site-imagenet",
        "other-site",
        "other-classifier",
        "default-as-site",
        "star-site",
        "unassigned",
        "format-1",
    ],
)
def test_check_scope(manifest: Manifest, site: str, classifier: str, error: str | None) -> None:
    if error is None:
        check_scope(manifest, site, classifier)
    else:
        with pytest.raises(BundleError, match=error):
            check_scope(manifest, site, classifier)


@pytest.mark.parametrize("site", ["a/b", "+", "#", "x" * 200, "two words"])
def test_manifest_site_must_be_a_name(site: str) -> None:
    with pytest.raises(ValueError, match="site"):
        _manifest(site)


def test_sign_bundle_writes_the_current_format(tmp_path: Path, key: str) -> None:
    """A format 1 upload (no site) is still readable, and the hub's re-signature makes it format 2."""
    make_bundle(tmp_path / "b", key)
    data = json.loads((tmp_path / "b" / MANIFEST).read_text())
    data.update(format_version=1)
    data.pop("site")
    old = Manifest.model_validate(data)
    assert old.format_version == 1 and old.site == ""
    signed = sign_bundle(tmp_path / "b", old.model_copy(update={"site": "shop"}), key)
    assert signed.format_version == FORMAT_VERSION
    assert verify_bundle(tmp_path / "b", public_key_of(key)).site == "shop"


def test_file_not_listed_in_the_manifest_is_refused(tmp_path: Path, key: str) -> None:
    with_index, without = tmp_path / "with", tmp_path / "without"
    make_bundle(with_index, key)
    make_bundle(without, key, with_index=False)
    shutil.copyfile(with_index / INDEX, without / INDEX)  # a real index, appended after signing
    with pytest.raises(BundleError, match=r"\['index.usearch'\] are not listed in the signed manifest"):
        verify_bundle(without, public_key_of(key))
    (without / INDEX).unlink()
    (without / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="extra.bin"):
        verify_bundle(without, public_key_of(key))


def test_rollback_statement_signature(key: str) -> None:
    statement = sign_rollback("shop", "door", "2", "5", key, issued_at=datetime(2026, 1, 2, tzinfo=UTC))
    verify_rollback(statement, public_key_of(key))
    again = RollbackStatement.model_validate_json(statement.model_dump_json())  # survives the wire
    verify_rollback(again, public_key_of(key))
    for field, value in [
        ("site", "other"),
        ("classifier", "x"),
        ("version", "1"),
        ("replaces", "6"),
        ("issued_at", datetime(2026, 1, 3, tzinfo=UTC)),
    ]:
        with pytest.raises(SignatureError):
            verify_rollback(statement.model_copy(update={field: value}), public_key_of(key))
    with pytest.raises(SignatureError):
        verify_rollback(statement, public_key_of(generate_signing_key()))


def test_fingerprint(key: str) -> None:
    pub = public_key_of(key)
    assert fingerprint(pub) == fingerprint(pub.upper()) and len(fingerprint(pub)) == 64
    assert fingerprint(pub) != fingerprint(public_key_of(generate_signing_key()))
    with pytest.raises(SignatureError):
        fingerprint("abc")


def test_corrupt_deflated_entry_is_a_bundle_error(tmp_path: Path) -> None:
    """Found by the bundle-reader fuzz test: corrupt deflate data raised zlib.error instead of BundleError."""
    import io
    import zipfile

    from camfleet_contract.bundle import unpack_bundle

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", bytes(range(256)) * 64)
    data = bytearray(buf.getvalue())
    start = 30 + len("model.onnx")  # the compressed stream follows the local header and the name
    data[start + 4 : start + 40] = b"\xff" * 36
    with pytest.raises(BundleError, match="corrupt"):
        unpack_bundle(bytes(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()
