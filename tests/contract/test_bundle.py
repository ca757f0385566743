import shutil
from pathlib import Path

import numpy as np
import pytest

from camfleet_contract.bundle import BundleError, pack_bundle, unpack_bundle, verify_bundle
from camfleet_contract.runtime import ClassifierRuntime
from camfleet_contract.signing import SignatureError, generate_signing_key, public_key_of, sign, verify
from tests.support.tinybundle import count_none_on_top, make_bundle


@pytest.fixture
def key() -> str:
    return generate_signing_key()


@pytest.fixture
def bundle(tmp_path: Path, key: str) -> Path:
    d = tmp_path / "b"
    make_bundle(d, key)
    return d


def test_sign_verify(key: str) -> None:
    sig = sign(b"data", key)
    verify(b"data", sig, public_key_of(key))
    with pytest.raises(SignatureError):
        verify(b"datA", sig, public_key_of(key))
    with pytest.raises(SignatureError):
        verify(b"data", sig, public_key_of(generate_signing_key()))


def test_verify_with_trusted_key(bundle: Path, key: str) -> None:
    m = verify_bundle(bundle, public_key_of(key))
    assert m.classes == ["red", "green", "blue"] and set(m.files) >= {"model.onnx", "index.usearch"}
    with pytest.raises(BundleError, match="signature"):
        verify_bundle(bundle, public_key_of(generate_signing_key()))


def test_tampered_file_detected(bundle: Path, key: str) -> None:
    with open(bundle / "model.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="model.onnx"):
        verify_bundle(bundle, public_key_of(key))


def test_tampered_manifest_detected(bundle: Path, key: str) -> None:
    text = (bundle / "manifest.json").read_text().replace('"red"', '"rot"')
    (bundle / "manifest.json").write_text(text)
    with pytest.raises(BundleError, match="signature"):
        verify_bundle(bundle, public_key_of(key))


def test_pack_unpack_round_trip(bundle: Path, key: str, tmp_path: Path) -> None:
    out = unpack_bundle(pack_bundle(bundle), tmp_path / "out")
    assert verify_bundle(out, public_key_of(key)).version == "1"


def test_unpack_rejects_bad_archives(bundle: Path, tmp_path: Path) -> None:
    import io
    import zipfile

    data = pack_bundle(bundle)
    with pytest.raises(BundleError, match="zip"):
        unpack_bundle(data[: len(data) // 2], tmp_path / "a")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../evil.onnx", b"x")
    with pytest.raises(BundleError, match="unexpected"):
        unpack_bundle(buf.getvalue(), tmp_path / "b")
    with pytest.raises(BundleError, match="over the limit"):
        unpack_bundle(data, tmp_path / "c", max_bytes=100)


def test_runtime_classifies_real_images(bundle: Path, key: str, test_data: Path) -> None:
    rt = ClassifierRuntime(bundle, public_key=public_key_of(key))
    red = np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = 220
    res = rt.classify([red])[0]
    assert res.label == "red" and res.probability > 0.9 and len(res.predictions) == 3
    assert 0.0 <= res.anomaly_score <= 1.0 and res.embedding.shape == (3,)
    photos = [p.read_bytes() for p in sorted((test_data / "clothing" / "validation" / "hat").glob("*.jpg"))[:4]]
    assert len(rt.classify_bytes(photos)) == 4
    assert rt.classify([]) == []


def test_runtime_refuses_broken_model(bundle: Path, key: str) -> None:
    (bundle / "model.onnx").write_bytes(b"not onnx")
    from camfleet_contract.bundle import Manifest, sign_bundle

    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    sign_bundle(bundle, manifest, key)
    with pytest.raises(BundleError, match="ONNX Runtime"):
        ClassifierRuntime(bundle, public_key=public_key_of(key))


def test_bundle_without_index(tmp_path: Path, key: str) -> None:
    make_bundle(tmp_path / "n", key, with_index=False)
    rt = ClassifierRuntime(tmp_path / "n")
    assert rt.index is None and rt.classify([np.zeros((8, 8, 3), np.uint8)])[0].distance is None
    shutil.rmtree(tmp_path / "n")


def test_none_of_the_above_class_on_top_is_flagged(bundle: Path, key: str) -> None:
    """A bundle whose "blue" means none of the above: a blue image is an anomaly whatever its score; red is not."""
    from camfleet_contract.bundle import Manifest, sign_bundle

    assert "none_classes" not in (bundle / "manifest.json").read_text()  # older agents read it as before
    red, blue = np.zeros((40, 40, 3), np.uint8), np.zeros((40, 40, 3), np.uint8)
    red[..., 0] = blue[..., 2] = 220
    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    never = manifest.model_copy(update={"anomaly": manifest.anomaly.model_copy(update={"threshold": 1.0})})
    sign_bundle(bundle, never, key)
    assert not any(c.anomaly for c in ClassifierRuntime(bundle).classify([red, blue]))
    sign_bundle(bundle, never.model_copy(update={"none_classes": ["blue"]}), key)
    got = ClassifierRuntime(bundle, public_key=public_key_of(key)).classify([red, blue])
    assert [c.label for c in got] == ["red", "blue"]
    assert not got[0].anomaly and got[1].anomaly and got[1].anomaly_score == 1.0
    assert [c.none_of_the_above for c in got] == [False, True] and got[1].as_dict()["none_of_the_above"] is True


def test_none_on_top_is_computed_once_per_batch(bundle: Path, key: str) -> None:
    """classify_batch takes the logits' argmax for the none-of-the-above rule once and hands it to the score and the
    flags, which come out as when each computes it itself."""
    from camfleet_contract.bundle import Manifest, sign_bundle

    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    sign_bundle(bundle, manifest.model_copy(update={"none_classes": ["blue"]}), key)
    rt = ClassifierRuntime(bundle, public_key=public_key_of(key))
    images = [np.zeros((40, 40, 3), np.uint8) for _ in range(4)]
    for img, channel in zip(images, [0, 1, 2, 2], strict=True):
        img[..., channel] = 220
    batch = rt.prepare(images)
    logits, embedding = rt.run(batch)
    scores = rt.anomaly_scores(logits, embedding)  # each computing the argmax itself, as before
    flags = rt.anomaly_flags(logits, scores)
    calls = count_none_on_top(rt)
    got = rt.classify_batch(batch)
    assert calls == [len(images)]
    assert [c.none_of_the_above for c in got] == [False, False, True, True]
    assert [c.anomaly for c in got] == flags.tolist() and [c.anomaly_score for c in got] == scores.tolist()


def test_manifest_refuses_bad_none_classes(bundle: Path) -> None:
    from pydantic import ValidationError

    from camfleet_contract.bundle import Manifest

    manifest = Manifest.model_validate_json((bundle / "manifest.json").read_bytes())
    data = manifest.model_dump()
    with pytest.raises(ValidationError, match="not among the classes"):
        Manifest.model_validate({**data, "none_classes": ["purple"]})
    with pytest.raises(ValidationError, match="at least one class"):
        Manifest.model_validate({**data, "none_classes": ["red", "green", "blue"]})
