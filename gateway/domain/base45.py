"""Base45 (RFC 9285): bytes as text that a QR code stores in its compact alphanumeric mode.

Why not Base64: a QR code's alphanumeric mode packs these 45 characters at 5.5
bits each, so Base45 text costs about 8.25 bits per byte in the symbol against
Base64's 10.7 in byte mode. Decoding is strict: a character outside the
alphabet, a length that leaves one character over, or a group whose value does
not fit its bytes is an error, never silently skipped.
"""

from __future__ import annotations

from gateway.errors import RentgateError

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_VALUES = {char: value for value, char in enumerate(ALPHABET)}


class Base45Error(RentgateError, ValueError):
    """Text that is not valid Base45."""


def encode(data: bytes) -> str:
    """Two bytes become three characters (least significant first); a last odd byte, two."""
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = (data[i] << 8) | data[i + 1]
        n, c = divmod(n, 45)
        e, d = divmod(n, 45)
        out += (ALPHABET[c], ALPHABET[d], ALPHABET[e])
    if len(data) % 2:
        e, d = divmod(data[-1], 45)
        out += (ALPHABET[d], ALPHABET[e])
    return "".join(out)


def decode(text: str) -> bytes:
    """Inverse of `encode`; `Base45Error` on any text `encode` cannot have produced."""
    if len(text) % 3 == 1:
        raise Base45Error(f"a length of {len(text)} leaves one character over")
    try:
        values = [_VALUES[char] for char in text]
    except KeyError as exc:
        raise Base45Error(f"{exc.args[0]!r} is not a Base45 character") from exc
    out = bytearray()
    for i in range(0, len(values), 3):
        group = values[i : i + 3]
        n = sum(value * 45**power for power, value in enumerate(group))
        size = len(group) - 1
        if n >= 1 << (8 * size):
            raise Base45Error(f"group {text[i : i + 3]!r} at {i} is out of range")
        out += n.to_bytes(size, "big")
    return bytes(out)
