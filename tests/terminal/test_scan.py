"""terminal.scan.decode on real images: camera-like frames rendered by segno and
degraded by tests/support/qr_frames.py, decoded by the real decoders (no mocks).

Read counts are deterministic (fixed seeds, deterministic decoders), so the
minimums below are what the pipeline reaches with one frame to spare; zxing-cpp
alone reads the same frames in the same test, so a cascade stage that stops
working shows up as a failure, not as a slower benchmark.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime

import cv2
import numpy as np
import pytest
import zxingcpp

from gateway.domain.credentials import CredentialKind, parse_credential
from gateway.domain.ids import IdNumber
from gateway.domain.signing import SigningKey
from gateway.domain.voucher import Voucher, issue, verify
from terminal import scan
from terminal.scan import FrameError, FrameRejectReason, decode
from tests.support.qr_frames import (
    CONDITIONS,
    NEGATIVE,
    NEGATIVE_KINDS,
    make_frame,
    photograph,
)

SEEDS = range(500, 512)
MIN_READS = dict.fromkeys(CONDITIONS, len(SEEDS) - 1)
"""All 12 are read today (zxing-cpp alone: 6 blurred, 11 small and glare, 12 the rest)."""


QR = zxingcpp.BarcodeFormat.QRCodeModel2


def zxing_alone(frame: np.ndarray) -> list[str]:
    return [r.text for r in zxingcpp.read_barcodes(frame, formats=QR)]


@pytest.mark.parametrize("condition", CONDITIONS)
def test_reads_vouchers_in_each_condition(condition: str) -> None:
    ours = baseline = 0
    for seed in SEEDS:
        frame, payload = make_frame(condition, seed)
        texts = decode(frame)
        assert texts in ([], [payload]), f"seed {seed}: read something else: {texts}"
        ours += texts == [payload]
        baseline += payload in zxing_alone(frame)
    assert ours >= MIN_READS[condition], f"{condition}: {ours}/{len(SEEDS)}"
    assert ours >= baseline


def test_blur_is_undone_by_deconvolution() -> None:
    """Blurred frames zxing-cpp alone cannot read are read by the de-blur stage."""
    stages = []
    for seed in SEEDS:
        frame, payload = make_frame("blurred", seed)
        if payload in zxing_alone(frame):
            continue
        result = scan.scan(frame)
        assert result.texts == [payload], f"seed {seed}"
        stages.append(result.stage)
    assert stages.count("deblur") >= 2, stages


@pytest.mark.parametrize("seed", range(2 * len(NEGATIVE_KINDS)))
def test_frames_without_a_code_return_nothing(seed: int) -> None:
    frame, payload = make_frame(NEGATIVE, seed)
    assert payload is None
    assert decode(frame) == [], NEGATIVE_KINDS[seed % len(NEGATIVE_KINDS)]


def test_synthetic_non_codes_return_nothing() -> None:
    rng = np.random.default_rng(7)
    frames = [
        rng.integers(0, 256, (720, 1280), dtype=np.uint8),
        np.full((720, 1280, 3), 255, np.uint8),
        np.zeros((2160, 3840, 3), np.uint8),
        np.kron(rng.integers(0, 2, (90, 160), dtype=np.uint8) * 255, np.ones((8, 8), np.uint8)),
    ]
    for frame in frames:
        assert decode(frame) == []


def test_grayscale_bgr_and_bgra_give_the_same_reading() -> None:
    for condition, seed in (("rotated", 1), ("inverted", 2), ("blurred", 500)):
        frame, payload = make_frame(condition, seed)
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
        single = gray[..., None]
        assert decode(frame) == decode(gray) == decode(bgra) == decode(single) == [payload]


def test_small_frame_around_the_code_and_a_4k_frame() -> None:
    frame, payload = make_frame("rotated", 3)
    (found,) = zxingcpp.read_barcodes(frame, formats=QR)
    p = found.position
    xs = [p.top_left.x, p.top_right.x, p.bottom_right.x, p.bottom_left.x]
    ys = [p.top_left.y, p.top_right.y, p.bottom_right.y, p.bottom_left.y]
    small = frame[max(0, min(ys) - 20) : max(ys) + 20, max(0, min(xs) - 20) : max(xs) + 20]
    assert max(small.shape) < 500
    assert decode(small) == [payload]
    big = cv2.resize(frame, (3840, 2160), interpolation=cv2.INTER_CUBIC)
    assert decode(big) == [payload]


def test_views_and_odd_layouts_are_accepted() -> None:
    frame, payload = make_frame("jpeg", 4)
    padded = np.zeros((720, 1280 * 2, 3), np.uint8)
    padded[:, ::2] = frame  # a strided view, not contiguous
    assert decode(padded[:, ::2]) == [payload]
    assert decode(np.asfortranarray(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))) == [payload]
    frame.flags.writeable = False
    assert decode(frame) == [payload]


def test_tiny_frames_return_nothing() -> None:
    for shape in [(1, 1), (2, 2, 3), (1, 1000), (15, 15), (3000, 20), (40, 40, 4)]:
        assert decode(np.full(shape, 128, np.uint8)) == []


def test_two_codes_are_both_returned_once_in_a_stable_order() -> None:
    left, first = make_frame("rotated", 5)
    right, second = make_frame("jpeg", 6)
    both = np.hstack([left, right])
    texts = decode(both)
    assert sorted(texts) == sorted([first, second])
    assert decode(both) == texts
    assert decode(np.hstack([left, left])) == [first]


@pytest.mark.parametrize(
    ("array", "reason"),
    [
        (np.zeros((10, 10), np.float32), FrameRejectReason.BAD_DTYPE),
        (np.zeros((10, 10), bool), FrameRejectReason.BAD_DTYPE),
        (np.zeros((10, 10), np.uint16), FrameRejectReason.BAD_DTYPE),
        (np.zeros((10, 10, 2), np.uint8), FrameRejectReason.BAD_SHAPE),
        (np.zeros((10, 10, 5), np.uint8), FrameRejectReason.BAD_SHAPE),
        (np.zeros(10, np.uint8), FrameRejectReason.BAD_SHAPE),
        (np.zeros((2, 2, 2, 3), np.uint8), FrameRejectReason.BAD_SHAPE),
        (np.zeros((0, 0), np.uint8), FrameRejectReason.EMPTY),
        (np.zeros((0, 5, 3), np.uint8), FrameRejectReason.EMPTY),
        ([[0, 255], [255, 0]], FrameRejectReason.NOT_ARRAY),
        (None, FrameRejectReason.NOT_ARRAY),
    ],
)
def test_arrays_that_are_not_images_are_refused_and_counted(
    array: object, reason: FrameRejectReason
) -> None:
    before = scan.rejected[reason]
    with pytest.raises(ValueError, match=reason.value) as caught:
        decode(array)  # type: ignore[arg-type]
    assert isinstance(caught.value, FrameError)
    assert caught.value.reason is reason
    assert scan.rejected[reason] == before + 1


def test_voucher_round_trip_through_a_camera() -> None:
    """A signed voucher -> QR -> degraded photo -> decode -> verified offline, claims equal."""
    key = SigningKey.generate()
    voucher = Voucher.new(
        registration_id="R-2026-000123",
        holder_name="张伟",
        id_number=IdNumber("11010519491231002X"),
        binding_key=bytes(32),
        building="西溪花园7幢",
        unit="1203",
        registered_on=date(2026, 11, 2),
        valid_until=date(2027, 11, 1),
        issued_at=datetime(2026, 11, 2, 9, 0, tzinfo=UTC),
    )
    payload = issue(voucher, key)
    for condition, seed in (("tilted", 1), ("blurred", 4), ("low_contrast_glare", 2)):
        frame = photograph(payload, condition, seed)
        (text,) = decode(frame)
        credential = parse_credential(CredentialKind.VOUCHER, text)
        verified = verify(credential.value, {key.kid: key.public}, date(2026, 11, 28))
        assert dataclasses.replace(verified, issuer=None) == voucher
        assert verified.issuer == key.kid


def test_frames_are_deterministic_per_seed() -> None:
    first, payload = make_frame("noisy", 9)
    again, same = make_frame("noisy", 9)
    other, different = make_frame("noisy", 10)
    assert np.array_equal(first, again)
    assert payload == same
    assert payload != different
    assert not np.array_equal(first, other)
    assert first.shape == (720, 1280, 3)
    assert first.dtype == np.uint8
    with pytest.raises(ValueError, match="unknown condition"):
        make_frame("foggy", 1)
