"""C2PA provenance: a local test CA signs, the manifest reads back valid with the AI disclosure and
the ingredients, trusted only against its own CA, invalid once the bytes change; a bare
self-signed certificate is refused with a message that says so."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from reelfab.media.c2pa_sign import (
    AI_SOURCE_TYPE,
    ProvenanceError,
    SigningMaterial,
    ingredient,
    make_test_ca,
    read_manifest,
    sign_video,
)
from reelfab.media.spec_check import top_level_boxes
from reelfab.media.tools import tool

pytest.importorskip("c2pa")

SOURCE_SHA = hashlib.sha256(b"the consenting subject's photo").hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("c2pa")


@pytest.fixture(scope="module")
def video(folder: Path) -> Path:
    path = folder / "render.mp4"
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25:duration=1",
         "-f", "lavfi", "-i", "sine=duration=1", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
         "-movflags", "+faststart", str(path)],
        check=True,
    )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def material(folder: Path) -> SigningMaterial:
    return make_test_ca(folder / "ca")


@pytest.fixture(scope="module")
def signed(folder: Path, video: Path, material: SigningMaterial) -> tuple[Path, str]:
    out = folder / "signed.mp4"
    ingredients = [
        ingredient(video, "parentOf", title="template.mp4"),
        {"title": "source.jpg", "sha256": SOURCE_SHA, "format": "image/jpeg", "relationship": "inputTo"},
    ]
    return out, sign_video(video, out, material, title="clip job-123", ingredients=ingredients)


def test_signed_video_reads_back_valid_with_the_ai_disclosure(signed: tuple[Path, str], video: Path) -> None:
    path, label = signed
    info = read_manifest(path)
    assert info.valid and info.trusted is None and info.validation_errors == []
    assert info.active_label == label and label.startswith("urn:c2pa:") and info.title == "clip job-123"
    assert [a["action"] for a in info.actions] == ["c2pa.opened", "c2pa.edited"]
    assert info.actions[1]["digitalSourceType"] == AI_SOURCE_TYPE
    assert info.actions[1]["softwareAgent"]["name"] == "reelfab"
    assert info.ingredients == [
        {"title": "template.mp4", "format": "video/mp4", "relationship": "parentOf",
         "sha256": hashlib.sha256(video.read_bytes()).hexdigest()},
        {"title": "source.jpg", "format": "image/jpeg", "relationship": "inputTo", "sha256": SOURCE_SHA},
    ]  # fmt: skip


def test_without_a_parent_the_action_is_created(folder: Path, video: Path, material: SigningMaterial) -> None:
    out = folder / "created.mp4"
    sign_video(video, out, material, title="t", ingredients=[
        {"title": "source.jpg", "sha256": SOURCE_SHA, "format": "image/jpeg", "relationship": "inputTo"}])  # fmt: skip
    info = read_manifest(out)
    assert info.valid and [a["action"] for a in info.actions] == ["c2pa.created"]
    assert info.actions[0]["digitalSourceType"] == AI_SOURCE_TYPE


def test_trusted_only_with_its_own_ca_as_anchor(
    signed: tuple[Path, str], folder: Path, material: SigningMaterial
) -> None:
    path, _ = signed
    assert read_manifest(path, trust_anchor_pem=material.ca_cert_pem).trusted is True
    other = make_test_ca(folder / "other-ca")
    untrusted = read_manifest(path, trust_anchor_pem=other.ca_cert_pem)
    assert untrusted.valid and untrusted.trusted is False
    assert any("signingCredential.untrusted" in e for e in untrusted.validation_errors)


def test_signing_keeps_faststart(signed: tuple[Path, str]) -> None:
    boxes = top_level_boxes(signed[0])
    assert boxes.index("moov") < boxes.index("mdat")


def test_tampering_after_signing_invalidates(signed: tuple[Path, str], folder: Path) -> None:
    data = bytearray(signed[0].read_bytes())
    data[data.find(b"mdat") + 2000] ^= 0xFF  # one byte of the picture
    tampered = folder / "tampered.mp4"
    tampered.write_bytes(bytes(data))
    info = read_manifest(tampered)
    assert not info.valid
    assert any("mismatch" in e for e in info.validation_errors), info.validation_errors


def test_unsigned_file_reads_as_invalid(video: Path) -> None:
    info = read_manifest(video)
    assert not info.valid and info.active_label is None and info.validation_errors


def _write_key_and_cert(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> SigningMaterial:
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / f"{stem}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return SigningMaterial(folder / f"{stem}.pem", folder / f"{stem}.key", folder / f"{stem}.pem")


def _certificate(subject: str, issuer: str, key: ec.EllipticCurvePrivateKey, signing_key: ec.EllipticCurvePrivateKey,
                 *, ca: bool) -> x509.Certificate:  # fmt: skip
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
    )  # fmt: skip
    if ca:  # what `openssl req -x509` makes by default
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
    return builder.sign(signing_key, hashes.SHA256())


@pytest.mark.parametrize("ca", [False, True], ids=["bare", "openssl-style"])
def test_a_self_signed_certificate_is_refused_clearly(folder: Path, video: Path, ca: bool) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    material = _write_key_and_cert(folder, f"self-{ca}", _certificate("me", "me", key, key, ca=ca), key)
    out = folder / "self-signed.mp4"
    with pytest.raises(
        ProvenanceError, match="bare self-signed certificate, which C2PA refuses: sign with a P-256 leaf"
    ):
        sign_video(video, out, material, title="t")
    assert not out.exists()


def test_a_leaf_c2pa_rejects_gets_the_requirements_spelled_out(folder: Path, video: Path) -> None:
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    leaf = _certificate("leaf", "some CA", key, ca_key, ca=False)  # no key usage, no EKU, no key ids
    material = _write_key_and_cert(folder, "weak-leaf", leaf, key)
    out = folder / "weak.mp4"
    with pytest.raises(ProvenanceError, match="certificate.*emailProtection"):
        sign_video(video, out, material, title="t")
    assert not out.exists()


def test_bad_ingredients_and_missing_material_are_refused(
    folder: Path, video: Path, material: SigningMaterial
) -> None:
    with pytest.raises(ValueError, match="64 hex"):
        sign_video(video, folder / "x.mp4", material, title="t",
                   ingredients=[{"title": "a", "sha256": "abc", "relationship": "inputTo"}])  # fmt: skip
    with pytest.raises(ValueError, match="relationship"):
        sign_video(video, folder / "x.mp4", material, title="t",
                   ingredients=[{"title": "a", "sha256": SOURCE_SHA, "relationship": "sibling"}])  # fmt: skip
    gone = SigningMaterial(folder / "none.pem", material.private_key_pem, material.ca_cert_pem)
    with pytest.raises(ProvenanceError, match="none.pem does not exist"):
        sign_video(video, folder / "x.mp4", gone, title="t")
