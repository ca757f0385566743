"""The model bundle: model.onnx + manifest.json + index + an ed25519 signature over the manifest.

A bundle travels as a zip. Whoever publishes it signs the manifest; the manifest lists the sha256 of every
other file, so one signature covers the whole bundle, and a file it does not list is refused, never opened.
Since format 2 the manifest names the site and classifier it is for (the hub sets both when it re-signs), so a
bundle signed for one place cannot be replayed in another: see `check_scope`.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .anomaly import AnomalyCalibration
from .images import Preprocessing
from .messages import utcnow
from .signing import SignatureError, public_key_of, sign, verify
from .topics import Name, validate_name

FORMAT_VERSION = 2
# Format 1 manifests (no site) are still readable, so the hub can re-sign an old upload; agents refuse them.
READABLE_FORMATS = frozenset({1, FORMAT_VERSION})
DEFAULT_SITE = "*"  # the hub's ImageNet default bundle is for every site, and only as this classifier:
DEFAULT_CLASSIFIER = "imagenet"
MODEL = "model.onnx"
MODEL_INT8 = "model.int8.onnx"  # optional statically quantised variant; the manifest's metrics say if it is usable
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
INDEX = "index.usearch"
INDEX_LABELS = "index_labels.json"
REPORT = "report.json"
KNOWN_FILES = frozenset({MODEL, MODEL_INT8, MANIFEST, SIGNATURE, INDEX, INDEX_LABELS, REPORT})
MAX_BUNDLE_BYTES = 512 * 1024 * 1024
# What reading a corrupt zip raises besides BadZipFile: truncation, corrupt deflate/lzma data, an unknown version or
# compression method (NotImplementedError), an encrypted entry (RuntimeError), offsets out of range (ValueError).
_UNZIP_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    ValueError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
)

__all__ = [
    "AnomalyCalibration",
    "BundleError",
    "DEFAULT_CLASSIFIER",
    "DEFAULT_SITE",
    "Manifest",
    "Preprocessing",
    "check_scope",
    "pack_bundle",
    "sha256_file",
    "sign_bundle",
    "unpack_bundle",
    "verify_bundle",
]


class BundleError(ValueError):
    """A bundle is incomplete, tampered with, or not signed by the expected key."""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = FORMAT_VERSION
    site: str = Field(default="", description='the site it is for; "*" = the default bundle; "" = not assigned')
    classifier: Name
    version: str = Field(min_length=1, max_length=64)
    classes: list[str] = Field(min_length=1)
    none_classes: list[str] = Field(
        default_factory=list,
        description='classes that mean "none of the above" (a site\'s rejected frames): a prediction of one is '
        "flagged as fitting no known group",
    )
    backbone: str
    embedding_dim: int = Field(gt=0)
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    anomaly: AnomalyCalibration
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict, description="file name -> sha256")
    signer: str = Field(default="", description="hex ed25519 public key of whoever signed")
    created_at: AwareDatetime = Field(default_factory=utcnow)

    @field_validator("format_version")
    @classmethod
    def _fmt(cls, v: int) -> int:
        if v not in READABLE_FORMATS:
            raise ValueError(f"bundle format_version {v} is not supported (expected {FORMAT_VERSION})")
        return v

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        return v if v in ("", DEFAULT_SITE) else validate_name(v, "site")

    @model_validator(mode="after")
    def _none_classes(self) -> Manifest:
        unknown = set(self.none_classes) - set(self.classes)
        if unknown:
            raise ValueError(f"none_classes {sorted(unknown)} are not among the classes")
        if len(self.none_classes) >= len(self.classes):
            raise ValueError("at least one class must not be a none-of-the-above class")
        return self


Precision = Literal["fp32", "int8"]
PRECISION = "precision"  # metrics key the hub signs: the model file hub and agents both run for this bundle


def signed_precision(manifest: Manifest) -> Precision | None:
    """The precision the hub signed into ``metrics``; None for a bundle signed before the choice was explicit."""
    value = manifest.metrics.get(PRECISION)
    return "int8" if value == "int8" else "fp32" if value == "fp32" else None


def read_precision(bundle_dir: str | Path) -> Precision | None:
    """``signed_precision`` of an unpacked bundle, read before loading it (the runtime then verifies the manifest,
    so a tampered choice is refused there); None when the manifest is missing or unreadable."""
    try:
        return signed_precision(Manifest.model_validate_json((Path(bundle_dir) / MANIFEST).read_bytes()))
    except (OSError, ValidationError):
        return None


def check_scope(manifest: Manifest, site: str, classifier: str) -> None:
    """Raise BundleError unless the signed manifest is for this site and classifier (or is the default bundle).

    The default bundle (site "*") is accepted only as the classifier named `DEFAULT_CLASSIFIER`, never as a
    site's own classifier.
    """
    if manifest.format_version < FORMAT_VERSION:
        raise BundleError(
            f"manifest format_version={manifest.format_version} names no site; bundles must be format "
            f"{FORMAT_VERSION} (re-sign it on the hub)"
        )
    if manifest.classifier != classifier:
        raise BundleError(f"manifest classifier={manifest.classifier!r} but this is classifier {classifier!r}")
    if manifest.site == DEFAULT_SITE and classifier == DEFAULT_CLASSIFIER:
        return
    if manifest.site != site:
        raise BundleError(f"manifest site={manifest.site!r} but this agent is in site {site!r}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sign_bundle(bundle_dir: str | Path, manifest: Manifest, private_key_hex: str) -> Manifest:
    """Hash every file, write manifest.json and its signature; returns the manifest as written."""
    bundle_dir = Path(bundle_dir)
    if not (bundle_dir / MODEL).is_file():
        raise BundleError(f"{bundle_dir} has no {MODEL}")
    files = {
        p.name: sha256_file(p)
        for p in sorted(bundle_dir.iterdir())
        if p.is_file() and p.name not in (MANIFEST, SIGNATURE)
    }
    unknown = set(files) - KNOWN_FILES
    if unknown:
        raise BundleError(f"unexpected files in bundle: {sorted(unknown)}")
    # Whatever format it was read as, it is written (and signed) in the current one.
    update = {"files": files, "signer": public_key_of(private_key_hex), "format_version": FORMAT_VERSION}
    manifest = manifest.model_copy(update=update)
    # Left out when empty, so a bundle without a none-of-the-above group reads as before on older agents.
    data = manifest.model_dump_json(indent=2, exclude=None if manifest.none_classes else {"none_classes"}).encode()
    (bundle_dir / MANIFEST).write_bytes(data)
    (bundle_dir / SIGNATURE).write_text(sign(data, private_key_hex) + "\n")
    return manifest


def read_signature(bundle_dir: str | Path) -> str:
    try:
        return (Path(bundle_dir) / SIGNATURE).read_text().strip()
    except OSError as exc:
        raise BundleError(f"bundle has no readable {SIGNATURE} ({exc})") from None


def verify_bundle(bundle_dir: str | Path, public_key_hex: str | None) -> Manifest:
    """Check the signature (against the trusted key, or the manifest's own signer when None) and all hashes."""
    bundle_dir = Path(bundle_dir)
    try:
        data = (bundle_dir / MANIFEST).read_bytes()
        manifest = Manifest.model_validate_json(data)
    except OSError as exc:
        raise BundleError(f"bundle has no readable {MANIFEST} ({exc})") from None
    except ValidationError as exc:
        raise BundleError(f"{MANIFEST} is invalid: {exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}") from None
    key = public_key_hex or manifest.signer
    if not key:
        raise BundleError("no key to verify the bundle against (manifest names no signer)")
    try:
        verify(data, read_signature(bundle_dir), key)
    except SignatureError as exc:
        raise BundleError(f"manifest signature check failed: {exc}") from None
    if MODEL not in manifest.files:
        raise BundleError(f"manifest does not list {MODEL}")
    # Before anything reads a file: one the signature does not cover (an appended index.usearch, say) must not
    # reach a parser, so its presence alone refuses the bundle.
    unlisted = sorted(
        p.name for p in bundle_dir.iterdir() if p.name not in (MANIFEST, SIGNATURE) and p.name not in manifest.files
    )
    if unlisted:
        raise BundleError(f"files {unlisted[:5]} are not listed in the signed manifest")
    for name, digest in manifest.files.items():
        path = bundle_dir / name
        if name not in KNOWN_FILES or not path.is_file():
            raise BundleError(f"file {name!r} listed in the manifest is missing or not allowed")
        if sha256_file(path) != digest:
            raise BundleError(f"file {name!r} does not match its sha256 in the manifest")
    return manifest


def pack_bundle(bundle_dir: str | Path) -> bytes:
    """The bundle as zip bytes (stored, not deflated: ONNX weights barely compress)."""
    bundle_dir = Path(bundle_dir)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for p in sorted(bundle_dir.iterdir()):
            if p.is_file() and p.name in KNOWN_FILES:
                zf.write(p, p.name)
    return buf.getvalue()


def unpack_bundle(data: bytes, dest: str | Path, max_bytes: int = MAX_BUNDLE_BYTES) -> Path:
    """Extract into `dest` (created, must be empty): known flat names only, bounded size."""
    dest = Path(dest)
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except _UNZIP_ERRORS as exc:  # e.g. "zip file version 6.4" from a damaged header
        raise BundleError(f"bundle is not a valid zip ({exc})") from None
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        bad = [n for n in names if n not in KNOWN_FILES]
        if bad:
            raise BundleError(f"bundle contains unexpected entries {bad[:5]}")
        if len(set(names)) != len(names):
            raise BundleError("bundle contains duplicate entries")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise BundleError(f"bundle unpacks to {total} bytes, over the limit of {max_bytes}")
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise BundleError(f"destination {dest} is not empty")
        try:
            for info in infos:
                with zf.open(info) as src, open(dest / info.filename, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
        except _UNZIP_ERRORS as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise BundleError(f"bundle zip is corrupt ({exc})") from None
    return dest
