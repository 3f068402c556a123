"""Image preparation for the QR cascade in `terminal.scan`: where a code may be, and
how to make a hard one readable. Pure functions on 8-bit grayscale arrays.

Numbers are from the 56 development frames (of 800) that zxing-cpp alone missed:

- `find_regions`: code-like patches (edges in both directions), so the costly
  attempts run on a crop of a few hundred pixels (~2 ms each) instead of the
  frame (upscaling the whole frame 2x read as many, at 44 ms a try).
- `upscale`: a crop upscaled 2x (cubic) read 24 of the 56: noise, glare, tiny codes.
- `denoise`: a 1-px Gaussian before that read 11 of the 13 noisy ones.
- `equalize`: CLAHE read 8 of 14 glare frames the other stages missed (150 more).
- `blur_kernels` + `Deconvolver`: defocus and motion blur estimated blind from
  the crop's cepstrum (the blur's spectral zeros give a negative peak at the
  blur length, or a negative ring at twice the defocus radius) and undone by
  a Wiener filter. The other stages read 6 of 28 blurred frames; with the
  true kernel Wiener reads all 28, and blind, the cascade now reads 19 of the
  20 blurred frames that reach this stage.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import numpy.typing as npt

Gray = npt.NDArray[np.uint8]
Box = tuple[int, int, int, int]
"""x, y, width, height in frame pixels."""

_REGION_SIDE = 640
"""Long side of the image the region finder works on (any frame size costs the same)."""
_MIN_REGION = 24
"""Smallest patch (at the finder's scale) worth a crop: a code of ~50 px in a 720p frame."""
_MAX_REGION = 0.9
"""Largest patch, as a fraction of the frame's short side. Larger ones are text pages,
grids, noise: cropping them made frames without a code 4x slower (median 46 vs 12 ms),
and a code that large is read by the full-frame pass (or has no quiet zone in view)."""
_CEPSTRUM_RADIUS = 18
"""Longest blur looked for, px: 1 module of defocus radius, 2 of motion, at ~6 px/module."""
_CEPSTRUM_SIDE = 256
"""Window of the crop (centre) the blur is estimated on: enough modules, one fast DFT."""
_SPAN = np.arange(-_CEPSTRUM_RADIUS, _CEPSTRUM_RADIUS + 1)
_RADIUS = np.hypot(_SPAN[:, None], _SPAN[None, :])
_RING_MASK = (_RADIUS >= 2.5) & (_RADIUS <= _CEPSTRUM_RADIUS)


def find_regions(gray: Gray, limit: int) -> list[Box]:
    """Up to `limit` boxes around patches dense in edges, the strongest first."""
    h, w = gray.shape
    scale = min(1.0, _REGION_SIDE / max(h, w))
    small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.0)
    gx = cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_16S, 1, 0))
    gy = cv2.convertScaleAbs(cv2.Sobel(small, cv2.CV_16S, 0, 1))
    # edges in both directions across the patch: a 2D code, not 1D bars or long edges
    energy = cv2.min(cv2.blur(gx, (15, 15)), cv2.blur(gy, (15, 15)))
    _, mask = cv2.threshold(energy, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((9, 9), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask)
    scored: list[tuple[float, Box]] = []
    for i in range(1, count):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if bw < _MIN_REGION or bh < _MIN_REGION or max(bw, bh) > 3 * min(bw, bh):
            continue
        if max(bw, bh) > _MAX_REGION * min(small.shape):
            continue
        score = float(energy[labels == i].mean()) * area
        box = (int(x / scale), int(y / scale), math.ceil(bw / scale), math.ceil(bh / scale))
        scored.append((score, box))
    scored.sort(key=lambda item: -item[0])
    return [box for _, box in scored[:limit]]


def cut(gray: Gray, box: Box, margin: float = 0.15) -> Gray:
    """The box plus a margin (the quiet zone and a little more), clipped to the frame."""
    x, y, w, h = box
    dx, dy = int(w * margin) + 4, int(h * margin) + 4
    return gray[max(0, y - dy) : y + h + dy, max(0, x - dx) : x + w + dx]


def fit(gray: Gray, side: int) -> Gray:
    """Scaled down (area average) so that the long side is at most `side`."""
    scale = side / max(gray.shape)
    if scale >= 1:
        return gray
    return np.asarray(cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))


def upscale(gray: Gray, factor: float) -> Gray:
    return np.asarray(cv2.resize(gray, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC))


def denoise(gray: Gray, sigma: float = 1.0) -> Gray:
    return np.asarray(cv2.GaussianBlur(gray, (0, 0), sigma))


def equalize(gray: Gray) -> Gray:
    """Local contrast (CLAHE, clip 4, 4x4 tiles): faded print beside a glare spot."""
    return np.asarray(cv2.createCLAHE(4.0, (4, 4)).apply(gray))


def blur_kernels(gray: Gray) -> list[npt.NDArray[np.float32]]:
    """Candidate blur kernels for a crop: a line and/or a disk from the cepstrum's minimum."""
    side = min(gray.shape)
    if side < 4 * _CEPSTRUM_RADIUS:
        return []
    side = min(side, _CEPSTRUM_SIDE)
    y0, x0 = (gray.shape[0] - side) // 2, (gray.shape[1] - side) // 2
    patch = gray[y0 : y0 + side, x0 : x0 + side].astype(np.float32)
    patch -= float(patch.mean())
    patch *= cv2.createHanningWindow((side, side), cv2.CV_32F)
    spectrum = cv2.dft(patch, flags=cv2.DFT_COMPLEX_OUTPUT)
    log_magnitude = np.log(cv2.magnitude(spectrum[..., 0], spectrum[..., 1]) + 1e-3)
    cepstrum = cv2.idft(
        cv2.merge([log_magnitude, np.zeros_like(log_magnitude)]),
        flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT,
    )
    r = _CEPSTRUM_RADIUS
    near = np.where(_RING_MASK, np.roll(cepstrum, (r, r), (0, 1))[: 2 * r + 1, : 2 * r + 1], 0)
    kernels: list[npt.NDArray[np.float32]] = []
    work = near.copy()
    for rank in range(2):  # the blur, or the module pitch along the code's axes, then the other
        at = int(np.argmin(work))
        if work.flat[at] >= 0:  # no spectral zeros at all: a flat patch, nothing to undo
            break
        dy, dx = at // (2 * r + 1) - r, at % (2 * r + 1) - r
        length = math.hypot(dx, dy)
        ring = near[np.abs(_RADIUS - length) < 0.75]
        if float(np.median(ring)) / float(near.flat[at]) < 0.6:  # a peak, not a ring: motion
            kernels.append(_line(length, math.atan2(dy, dx)))
        if rank == 0:
            kernels.append(_disk(length / 2))
        for y, x in ((dy + r, dx + r), (r - dy, r - dx)):  # the peak and its mirror image
            work[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = 0
    return kernels


class Deconvolver:
    """Wiener deconvolution of one image by several kernels, its spectrum computed once.

    Spectra stay in OpenCV's packed real format (CCS): 6x faster than complex.
    """

    def __init__(self, gray: Gray, pad: int = 2 * _CEPSTRUM_RADIUS) -> None:
        h, w = gray.shape
        self._pad, self._shape = pad, (h, w)
        self._size = (cv2.getOptimalDFTSize(h + 2 * pad), cv2.getOptimalDFTSize(w + 2 * pad))
        bottom, right = self._size[0] - h - pad, self._size[1] - w - pad
        image = cv2.copyMakeBorder(gray, pad, bottom, pad, right, cv2.BORDER_REFLECT)
        self._spectrum = cv2.dft(image.astype(np.float32))

    def apply(self, kernel: npt.NDArray[np.float32], nsr: float = 0.01) -> Gray:
        """`nsr` (noise-to-signal) keeps the blur's spectral zeros from exploding."""
        psf = np.zeros(self._size, np.float32)
        k = kernel.shape[0]
        psf[:k, :k] = kernel  # in the corner, not centred: the output shifts by k // 2
        transfer = cv2.dft(psf, nonzeroRows=k)
        power = _ccs_real_pairs(np.asarray(cv2.mulSpectrums(transfer, transfer, 0, conjB=True)))
        restored = cv2.mulSpectrums(self._spectrum, transfer, 0, conjB=True) / (power + nsr)
        image = cv2.idft(restored, flags=cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
        (h, w), p = self._shape, self._pad - k // 2
        return np.clip(image[p : p + h, p : p + w], 0, 255).astype(np.uint8)


def _ccs_real_pairs(ccs: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """A real-valued spectrum in CCS layout with each value copied to its imaginary slot,
    so that an element-wise division divides both parts of every complex value."""
    out = ccs.copy()
    h, w = ccs.shape
    pairs_w = w - 1 if w % 2 == 0 else w  # columns 1..pairs_w-1 hold (re, im) pairs
    out[:, 2:pairs_w:2] = ccs[:, 1 : pairs_w - 1 : 2]
    pairs_h = h - 1 if h % 2 == 0 else h
    columns = [0, w - 1] if w % 2 == 0 else [0]
    for c in columns:  # the first (and Nyquist) column are packed down the rows
        out[2:pairs_h:2, c] = ccs[1 : pairs_h - 1 : 2, c]
    return out


def _disk(radius: float) -> npt.NDArray[np.float32]:
    size = math.ceil(radius) * 2 + 1
    kernel = np.zeros((size, size), np.float32)
    cv2.circle(kernel, (size // 2, size // 2), round(radius), 1.0, -1, cv2.LINE_AA)
    kernel /= kernel.sum()
    return kernel


def _line(length: float, angle: float) -> npt.NDArray[np.float32]:
    size = math.ceil(length) | 1
    kernel = np.zeros((size, size), np.float32)
    half = np.array([math.cos(angle), math.sin(angle)]) * (length - 1) / 2
    start = np.round(size // 2 - half).astype(int)
    end = np.round(size // 2 + half).astype(int)
    cv2.line(kernel, tuple(start.tolist()), tuple(end.tolist()), 1.0, 1, cv2.LINE_AA)
    kernel /= kernel.sum()
    return kernel
