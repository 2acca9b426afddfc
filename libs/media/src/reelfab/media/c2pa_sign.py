"""C2PA provenance for rendered videos (c2pa-python 0.38): a manifest embedded in the MP4 saying the
video was made with a trained algorithm (digitalSourceType compositeWithTrainedAlgorithmicMedia on
the c2pa.created action, or on c2pa.edited after c2pa.opened when the template is given as the
parentOf ingredient), and which template and source image went into it, signed ES256.

Ingredients are hash-only: c2pa builds a full ingredient from the file itself, but the template and
the source photo stay in storage, so each is described by title, format, relationship and its
SHA-256 (kept in the ingredient's metadata under ``reelfab:sha256`` and as ``instance_id``).

c2pa refuses a bare self-signed certificate; ``make_test_ca`` makes what it accepts for development
and tests: a local CA and a P-256 leaf (CA:FALSE, digitalSignature, emailProtection, key
identifiers), the chain file holding the leaf then the CA. Production passes its own Paths."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from reelfab.errors import PermanentError
from reelfab.version import __version__

AI_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
COMPOSITE_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/composite"
SHA256_KEY = "reelfab:sha256"  # where an ingredient's content hash goes in its metadata
RELATIONSHIPS = ("parentOf", "componentOf", "inputTo")
MIME_TYPES = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime"}


class ProvenanceError(PermanentError):
    """Signing or reading a C2PA manifest failed (bad certificate, key, or file)."""


@dataclass(frozen=True)
class SigningMaterial:
    cert_chain_pem: Path  # leaf first, then the CA(s)
    private_key_pem: Path  # the leaf's key, PKCS#8
    ca_cert_pem: Path  # the trust anchor readers load to call the signature trusted


@dataclass(frozen=True)
class ManifestInfo:
    valid: bool  # signature and hashes check out
    trusted: bool | None  # the chain ends in the given anchor; None when no anchor was given
    active_label: str | None
    title: str | None
    actions: list[dict[str, Any]] = field(default_factory=list)
    ingredients: list[dict[str, Any]] = field(default_factory=list)  # title, format, relationship, sha256
    validation_errors: list[str] = field(default_factory=list)  # "code: explanation"
    signer: str | None = None  # the signing certificate's common name (or issuer), as the manifest states it


# ---------------------------------------------------------------------------------- certificates


def make_test_ca(folder: Path, *, name: str = "Reelfab test", days: int = 365) -> SigningMaterial:
    """A local CA and a P-256 leaf it signs, written as PEM files in ``folder`` (not for production)."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _ca_certificate(ca_key, f"{name} CA", now, days)
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = _leaf_certificate(leaf_key, f"{name} signer", ca_cert, ca_key, now, days)
    material = SigningMaterial(folder / "chain.pem", folder / "signer.key", folder / "ca.pem")
    material.cert_chain_pem.write_bytes(_pem(leaf_cert) + _pem(ca_cert))
    material.private_key_pem.write_bytes(_key_pem(leaf_key))
    material.private_key_pem.chmod(0o600)
    material.ca_cert_pem.write_bytes(_pem(ca_cert))
    return material


def _ca_certificate(
    key: ec.EllipticCurvePrivateKey, cn: str, now: dt.datetime, days: int
) -> x509.Certificate:
    subject = _name(cn)
    return (
        _base(subject, subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _leaf_certificate(
    key: ec.EllipticCurvePrivateKey,
    cn: str,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    now: dt.datetime,
    days: int,
) -> x509.Certificate:
    # c2pa calls a leaf without the key identifiers "invalid"; emailProtection is an EKU it accepts.
    return (
        _base(_name(cn), issuer.subject, key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _base(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: dt.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=key_cert_sign, crl_sign=crl_sign,
        encipher_only=False, decipher_only=False,
    )  # fmt: skip


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Reelfab"),
        ]
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# ------------------------------------------------------------------------------------------ signing


def ingredient(path: Path, relationship: str = "componentOf", title: str | None = None) -> dict[str, str]:
    """An ingredient description of a local file (its title, format and SHA-256), for ``sign_video``."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    suffix = path.suffix.lower()
    fmt = MIME_TYPES.get(suffix) or {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}.get(
        suffix
    )
    return {"title": title or path.name, "sha256": digest.hexdigest(), "format": fmt or "application/octet-stream",
            "relationship": relationship}  # fmt: skip


def manifest_definition(
    *, title: str, claim_generator: str, ingredients: Sequence[Mapping[str, str]], ai_action: bool
) -> dict[str, Any]:
    """The manifest: with a ``parentOf`` ingredient (the template) the actions are c2pa.opened (of
    the parent) then c2pa.edited; without one, c2pa.created (c2pa checks that the first action is
    created or opened). The AI disclosure is the edit's or creation's digitalSourceType."""
    name, _, version = claim_generator.partition("/")
    agent = {"name": name, **({"version": version} if version else {})}
    definitions = [_ingredient_definition(i) for i in ingredients]
    if len({d["instance_id"] for d in definitions}) < len(definitions):
        raise ValueError("two ingredients with the same sha256")
    parents = [d for d in definitions if d["relationship"] == "parentOf"]
    if len(parents) > 1:
        raise ValueError("at most one ingredient can be the parentOf the video")
    source_type = AI_SOURCE_TYPE if ai_action else COMPOSITE_SOURCE_TYPE
    if parents:
        actions = [
            {"action": "c2pa.opened", "parameters": {"ingredientIds": [parents[0]["instance_id"]]}},
            {"action": "c2pa.edited", "digitalSourceType": source_type, "softwareAgent": agent},
        ]
    else:
        actions = [{"action": "c2pa.created", "digitalSourceType": source_type, "softwareAgent": agent}]
    return {
        "claim_generator_info": [agent],
        "title": title,
        "assertions": [{"label": "c2pa.actions", "data": {"actions": actions}}],
        "ingredients": definitions,
    }


def _ingredient_definition(item: Mapping[str, str]) -> dict[str, Any]:
    # Hash-only: c2pa wants the ingredient's file to derive its own hash and thumbnail; the template
    # and source image stay in storage, so the manifest records their SHA-256 in the metadata instead.
    relationship = item.get("relationship", "componentOf")
    if relationship not in RELATIONSHIPS:
        raise ValueError(f"ingredient relationship {relationship!r}: one of {', '.join(RELATIONSHIPS)}")
    sha256 = item["sha256"].lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"ingredient {item.get('title')!r}: sha256 must be 64 hex digits")
    return {
        "title": item["title"],
        "format": item.get("format", "application/octet-stream"),
        "relationship": relationship,
        "instance_id": f"sha256:{sha256}",
        "metadata": {SHA256_KEY: sha256},
    }


def sign_video(
    input: Path,
    output: Path,
    material: SigningMaterial,
    *,
    title: str,
    claim_generator: str = f"reelfab/{__version__}",
    ingredients: Sequence[Mapping[str, str]] = (),
    ai_action: bool = True,
) -> str:
    """Write ``input`` with an embedded, signed C2PA manifest to ``output``; returns the manifest label.
    Raises ProvenanceError (e.g. a self-signed or otherwise unusable certificate); no output is left."""
    import c2pa

    if input.resolve() == output.resolve():
        raise ProvenanceError(f"{output}: signing writes a new file; give another output path")
    mime = MIME_TYPES.get(input.suffix.lower())
    if mime is None:
        raise ProvenanceError(f"{input}: cannot sign a {input.suffix or 'suffix-less'} file (mp4/m4v/mov)")
    definition = manifest_definition(title=title, claim_generator=claim_generator, ingredients=ingredients,
                                     ai_action=ai_action)  # fmt: skip
    try:
        with (
            _signer(material) as signer,
            c2pa.Builder(definition) as builder,
            input.open("rb") as source,
            output.open("w+b") as dest,
        ):
            builder.sign(signer, mime, source, dest)
    except (c2pa.C2paError, OSError) as exc:
        output.unlink(missing_ok=True)
        raise ProvenanceError(f"C2PA signing of {input} failed: {_explain(exc, material)}") from exc
    label = read_manifest(output).active_label
    if label is None:
        raise ProvenanceError(f"{output}: the manifest just written cannot be read back")
    return label


def _signer(material: SigningMaterial) -> Any:
    import c2pa

    for path in (material.cert_chain_pem, material.private_key_pem):
        if not path.is_file():
            raise ProvenanceError(f"signing material {path} does not exist")
    chain = material.cert_chain_pem.read_bytes()
    _check_chain(material.cert_chain_pem, chain)
    info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, chain, material.private_key_pem.read_bytes(), None)
    return c2pa.Signer.from_info(info)


def _check_chain(path: Path, chain: bytes) -> None:
    """Refuse what c2pa would refuse with a vaguer message ("the certificate is invalid")."""
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError as exc:
        raise ProvenanceError(f"{path}: not a PEM certificate chain ({exc})") from None
    leaf = certs[0]
    if leaf.issuer == leaf.subject:
        raise ProvenanceError(
            f"{path} holds a bare self-signed certificate, which C2PA refuses: {SIGNER_NEEDS}"
        )


SIGNER_NEEDS = (
    "sign with a P-256 leaf certificate issued by a CA (CA:FALSE, digitalSignature, an extended key usage "
    "such as emailProtection, subject and authority key identifiers); chain file = leaf, then CA"
)


def _explain(exc: BaseException, material: SigningMaterial) -> str:
    text = str(exc) or type(exc).__name__
    if "certificate" in text:
        return f"{text} ({material.cert_chain_pem}): {SIGNER_NEEDS}"
    return text


# ------------------------------------------------------------------------------------------ reading


def read_manifest(path: Path, trust_anchor_pem: Path | None = None) -> ManifestInfo:
    """The active manifest of ``path`` and whether it validates (and, given an anchor, is trusted).
    A file without a manifest reads as invalid with the reason; a missing file raises ProvenanceError."""
    import c2pa

    if not path.is_file():
        raise ProvenanceError(f"{path}: no such file")
    try:
        with ExitStack() as stack:
            stream = stack.enter_context(path.open("rb"))
            mime = MIME_TYPES.get(path.suffix.lower(), "video/mp4")
            if trust_anchor_pem is None:
                reader = stack.enter_context(c2pa.Reader(mime, stream))
            else:
                # The anchor goes into this reader's own context: no process-wide trust settings change.
                settings = {
                    "trust": {"trust_anchors": trust_anchor_pem.read_text()},
                    "verify": {"verify_trust": True},
                }
                context = stack.enter_context(c2pa.Context.from_dict(settings))
                reader = stack.enter_context(c2pa.Reader(mime, stream, None, context))
            store = json.loads(reader.json())
    except c2pa.C2paError as exc:
        return ManifestInfo(valid=False, trusted=False if trust_anchor_pem else None, active_label=None, title=None,
                            validation_errors=[str(exc) or type(exc).__name__])  # fmt: skip
    return _manifest_info(store, trusted_checked=trust_anchor_pem is not None)


def _manifest_info(store: dict[str, Any], *, trusted_checked: bool) -> ManifestInfo:
    label = store.get("active_manifest")
    manifest = store.get("manifests", {}).get(label, {}) if label else {}
    state = store.get("validation_state")
    failures = store.get("validation_results", {}).get("activeManifest", {}).get("failure", [])
    errors = [
        f"{f.get('code')}: {f.get('explanation', '')}".strip()
        for f in failures
        # without an anchor trust was never the question: do not report it as an error
        if trusted_checked or f.get("code") != "signingCredential.untrusted"
    ]
    return ManifestInfo(
        valid=state in ("Valid", "Trusted"),
        trusted=(state == "Trusted") if trusted_checked else None,
        active_label=label,
        title=manifest.get("title"),
        actions=_actions(manifest),
        ingredients=[_ingredient_summary(i) for i in manifest.get("ingredients", [])],
        validation_errors=errors,
        signer=_signer_name(manifest.get("signature_info") or {}),
    )


def _signer_name(info: dict[str, Any]) -> str | None:
    name = info.get("common_name") or info.get("issuer")
    return str(name) if name else None


def _actions(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    actions: list[dict[str, Any]] = []
    for assertion in manifest.get("assertions", []):
        if str(assertion.get("label", "")).startswith("c2pa.actions"):
            actions += assertion.get("data", {}).get("actions", [])
    return actions


def _ingredient_summary(item: dict[str, Any]) -> dict[str, Any]:
    return {
        "title": item.get("title"),
        "format": item.get("format"),
        "relationship": item.get("relationship"),
        "sha256": (item.get("metadata") or {}).get(SHA256_KEY),
    }
