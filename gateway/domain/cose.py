"""COSE_Sign1 (RFC 9052 §4.2) with EdDSA/Ed25519: the envelope of a signed voucher.

Only what vouchers need, and strict about it: tag 18, a protected header of
exactly {1 (alg): -8 (EdDSA), 4 (kid): bstr}, an empty unprotected header, an
embedded payload and a 64-byte signature. What is signed is the Sig_structure
`["Signature1", protected, external_aad = b"", payload]`. Parsing never decodes
the payload: the caller verifies first and only then reads what was signed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2

from gateway.domain.signing import SIGNATURE_BYTES, SigningKey, VerifyKey
from gateway.errors import RentgateError

TAG_SIGN1 = 18
HEADER_ALG = 1
HEADER_KID = 4
ALG_EDDSA = -8
_MAX_DEPTH = 4
"""COSE_Sign1 nests no deeper than its header map; anything deeper is not one."""


class CoseError(RentgateError, ValueError):
    """Bytes that are not a COSE_Sign1 structure this module accepts."""


@dataclass(frozen=True, slots=True)
class Sign1:
    """A parsed, not yet verified COSE_Sign1."""

    protected: bytes
    kid: bytes
    payload: bytes
    signature: bytes

    def verify(self, key: VerifyKey) -> bool:
        """True when `signature` is `key`'s over this structure's Sig_structure."""
        return key.verify(self.signature, sig_structure(self.protected, self.payload))


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """The bytes Ed25519 signs: context, protected header, empty external AAD, payload."""
    return cbor2.dumps(["Signature1", protected, b"", payload])


def sign(payload: bytes, key: SigningKey) -> bytes:
    """A tagged COSE_Sign1 over `payload`, its kid the key's id in ASCII."""
    protected = cbor2.dumps({HEADER_ALG: ALG_EDDSA, HEADER_KID: key.kid.encode("ascii")})
    signature = key.sign(sig_structure(protected, payload))
    return cbor2.dumps(cbor2.CBORTag(TAG_SIGN1, [protected, {}, payload, signature]))


def parse(data: bytes) -> Sign1:
    """Split a COSE_Sign1 into its parts; `CoseError` on anything malformed or unexpected."""
    item = strict_loads(data, "COSE_Sign1")
    if not isinstance(item, cbor2.CBORTag) or item.tag != TAG_SIGN1:
        raise CoseError("not tagged as COSE_Sign1 (tag 18)")
    parts = item.value  # cbor2 decodes a tag's content immutable: a tuple, a frozendict
    if not isinstance(parts, list | tuple) or len(parts) != 4:
        raise CoseError("COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = parts
    if not isinstance(protected, bytes):
        raise CoseError("protected header must be a byte string")
    if not isinstance(unprotected, Mapping) or unprotected:
        raise CoseError("unprotected header must be empty")
    if not isinstance(payload, bytes):
        raise CoseError("payload must be an embedded byte string")
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise CoseError(f"signature must be {SIGNATURE_BYTES} bytes")
    header = strict_loads(protected, "protected header")
    if (
        not isinstance(header, Mapping)
        or set(header) != {HEADER_ALG, HEADER_KID}
        or any(type(label) is not int for label in header)  # True == 1.0 == 1 in a set
    ):
        raise CoseError("protected header must hold exactly alg (1) and kid (4)")
    alg = header[HEADER_ALG]
    if type(alg) is not int or alg != ALG_EDDSA:
        raise CoseError(f"algorithm {alg!r} is not EdDSA (-8)")
    kid = header[HEADER_KID]
    if not isinstance(kid, bytes) or not kid:
        raise CoseError("kid must be a non-empty byte string")
    return Sign1(protected, kid, payload, signature)


def strict_loads(data: bytes, what: str) -> Any:
    """One CBOR item filling `data` exactly: no trailing bytes, no indefinite lengths,
    no duplicate map keys, shallow nesting. Decoding errors become `CoseError`."""
    stream = io.BytesIO(data)
    decoder = cbor2.CBORDecoder(
        stream, allow_indefinite=False, allow_duplicate_keys=False, max_depth=_MAX_DEPTH
    )
    try:
        item = decoder.decode()
    except (cbor2.CBORError, ValueError, TypeError, OverflowError) as exc:
        raise CoseError(f"{what} is not valid CBOR: {exc}") from exc
    if stream.tell() != len(data):
        raise CoseError(f"{len(data) - stream.tell()} bytes after the {what}")
    return item
