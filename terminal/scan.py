"""Read voucher QR codes from camera frames: a cascade that stops at the first success.

Why a cascade: zxing-cpp alone reads ~93 % of handheld frames in ~4 ms; the rest
(blur, sensor noise, glare, tiny codes) need work costing 5-10x more, so that
work runs only when the fast path found nothing, and only on crops of the frame.

Stages, and what each added on 600 development frames (60 per condition of
tests/support/qr_frames.py, seeds 1000-1059, apart from the benchmark's):
1. `full` (556/600): zxing-cpp on the whole frame, QR Model 2 only (vouchers
   are nothing else; all formats cost 10x, and the 1D ones are what misreads
   textures), with its own inversion (dark-mode screens) and downscaling.
2. For up to two code-like regions (`scan_prepare.find_regions`), cut out with
   their quiet zone and upscaled 2x: `crop` as is (+17: noise, glare, tiny
   codes), `denoise` (+3: sensor noise), `contrast` (CLAHE, +1; on 150 more
   glare frames it read 8 of the 14 the other stages missed).
3. `deblur` (+19; blurred frames 40 -> 59 of 60): Wiener deconvolution of the
   strongest region with kernels estimated from its cepstrum.
Total 596/600 (99.3 %), no false positive on 60 frames without a code.

Only results that passed zxing's Reed-Solomon check are returned; nothing here
filters by payload (verification happens elsewhere).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import cv2
import numpy as np
import numpy.typing as npt
import zxingcpp

from gateway.errors import RentgateError
from terminal import scan_prepare as prep
from terminal.scan_prepare import Gray

_QR = zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCodeModel2)
_MAX_REGIONS = 2
"""On the test frames the code is always the strongest region, and a second one read
nothing more for ~3 ms on frames without a code; kept for backgrounds busier than
the generator draws (a keyboard or a printed photo next to the voucher)."""
_CROP_SIDE = 640
"""Crops are scaled down to this long side, so 4K frames cost like 720p ones."""
_MIN_CROP = 16
_DEBLUR_REGIONS = 1
"""De-blur the strongest region only: same reads on the development set, 20 % less time
on frames without a code (they run every stage)."""


class FrameRejectReason(StrEnum):
    """Why an array is not a frame `decode` accepts."""

    NOT_ARRAY = "not_array"
    BAD_DTYPE = "bad_dtype"
    BAD_SHAPE = "bad_shape"
    EMPTY = "empty"


class FrameError(RentgateError, ValueError):
    """The array is not an image; `reason` says why."""

    def __init__(self, reason: FrameRejectReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


rejected: Counter[FrameRejectReason] = Counter()
"""Frames refused, by reason (for the terminal's health report)."""


@dataclass(frozen=True, slots=True)
class Scan:
    """What one frame gave: the texts, and the cascade stage that read them."""

    texts: list[str]
    stage: str | None


def decode(frame: npt.NDArray[np.generic]) -> list[str]:
    """Texts of the QR codes in a BGR, BGRA or grayscale uint8 frame; [] when none.

    Deduplicated, in zxing's order for the stage that read them. Raises
    FrameError (a ValueError) for arrays that are not such an image.
    """
    return scan(frame).texts


def scan(frame: npt.NDArray[np.generic]) -> Scan:
    """`decode`, also saying which stage of the cascade succeeded."""
    gray = _to_gray(frame)
    for stage, image in _cascade(gray):
        texts = _read(image)
        if texts:
            return Scan(texts, stage)
    return Scan([], None)


_CROP_STAGES: tuple[tuple[str, Callable[[Gray], Gray]], ...] = (
    ("crop", lambda crop: prep.upscale(crop, 2.0)),
    ("denoise", lambda crop: prep.upscale(prep.denoise(crop), 2.0)),
    ("contrast", lambda crop: prep.upscale(prep.equalize(crop), 2.0)),
)


def _cascade(gray: Gray) -> Iterator[tuple[str, Gray]]:
    """Images to read, in order of cost; lazy, so nothing is prepared past a success."""
    yield "full", gray
    boxes = prep.find_regions(gray, _MAX_REGIONS)
    crops = [prep.fit(prep.cut(gray, box), _CROP_SIDE) for box in boxes]
    crops = [crop for crop in crops if min(crop.shape) >= _MIN_CROP]
    for crop in crops:
        for stage, prepare in _CROP_STAGES:
            yield stage, prepare(crop)
    for crop in crops[:_DEBLUR_REGIONS]:
        kernels = prep.blur_kernels(crop)
        if kernels:
            deconvolver = prep.Deconvolver(crop)
            for kernel in kernels:
                yield "deblur", deconvolver.apply(kernel)


def _read(gray: Gray) -> list[str]:
    """zxing on one image: the decoded texts, deduplicated, in zxing's order."""
    texts: list[str] = []
    for result in zxingcpp.read_barcodes(gray, formats=_QR):
        if result.valid and result.text not in texts:
            texts.append(result.text)
    return texts


def _to_gray(frame: npt.NDArray[np.generic]) -> Gray:
    """Validate and convert to one contiguous 8-bit channel, counting refusals."""
    try:
        if not isinstance(frame, np.ndarray):
            raise FrameError(FrameRejectReason.NOT_ARRAY, f"got {type(frame).__name__}")
        if frame.dtype != np.uint8:
            raise FrameError(FrameRejectReason.BAD_DTYPE, f"dtype {frame.dtype}, need uint8")
        if frame.ndim == 3 and frame.shape[2] == 1:
            frame = frame[..., 0]
        if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
            raise FrameError(
                FrameRejectReason.BAD_SHAPE, f"shape {frame.shape}, need HxW, HxWx3 or HxWx4"
            )
        if frame.size == 0:
            raise FrameError(FrameRejectReason.EMPTY, f"shape {frame.shape}")
    except FrameError as exc:
        rejected[exc.reason] += 1
        raise
    if frame.ndim == 2:
        return np.ascontiguousarray(frame, dtype=np.uint8)
    code = cv2.COLOR_BGR2GRAY if frame.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(frame), code), dtype=np.uint8)
