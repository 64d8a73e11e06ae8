"""Hair removal for dermoscopic images (DullRazor-style, OpenCV).

Dark, thin hairs are found as the response of a black-hat morphology (closing minus image) on the
luminance: a closing with a kernel wider than a hair fills the hair in, so the difference is large
exactly on thin dark structures and small on a lesion, which is wider than the kernel. The mask is
thresholded, reduced to its hair-shaped (thin, elongated) components so that dots, globules and
pigment network inside the lesion are kept, grown by a pixel, and in-painted from the
surroundings.

``remove_hair`` works on one uint8 RGB image; the pipeline runs it once per image before its cache
(``hair_removal=True``); :func:`precompute_hair_removed` writes cleaned copies of a whole dataset.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from skinzoo.errors import DataError, UsageError


def default_kernel_size(height: int, width: int) -> int:
    """An odd kernel wider than a hair and a hair crossing: ~1/15 of the shorter side, 3-31 px."""
    k = min(31, max(3, int(round(min(height, width) / 15))))
    return k if k % 2 else k + 1


def hair_mask(img: np.ndarray, kernel_size: int | None = None, threshold: int = 10) -> np.ndarray:
    """Boolean (H, W) mask of dark thin structures (hairs) in a uint8 RGB image."""
    import cv2

    img = _as_uint8_rgb(img)
    k = kernel_size or default_kernel_size(*img.shape[:2])
    if k < 1:
        raise UsageError(f"hair-removal kernel size {k} must be positive", "use an odd size such as 9")
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    # A cross-shaped element catches hairs in every direction while filling less of a round
    # lesion's fine texture than a square one would.
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (k, k))
    blackhat = cv2.morphologyEx(grey, cv2.MORPH_BLACKHAT, kernel)
    blackhat = cv2.GaussianBlur(blackhat, (3, 3), 0)
    mask = (blackhat > threshold).astype(np.uint8)
    mask = thin_elongated(mask, min(img.shape[:2]))
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8))  # include the hair's soft edge
    return mask.astype(bool)


def thin_elongated(mask: np.ndarray, side: int, min_elongation: float = 3.0) -> np.ndarray:
    """Keep the connected components of a uint8 mask that are shaped like hairs.

    The black-hat responds to every dark structure narrower than its kernel: hairs, but also the
    dots, globules and pigment network inside melanomas, naevi and keratoses, which are the
    diagnostic texture and must not be in-painted. Hairs are long and thin; those structures are
    blobs or meshes. A component is kept when the ratio of the principal axes of its pixel
    cloud (second moments) is at least ``min_elongation`` (a straight or gently curved hair), or
    when it spans at least half the image side while filling under a quarter of its box (long
    crossing hairs, whose X shape has no single axis). Everything else is left untouched.
    """
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = np.zeros(count, bool)
    for i in range(1, count):
        area = stats[i, cv2.CC_STAT_AREA]
        w, h = stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]
        if area < 3:
            continue
        ys, xs = np.nonzero(labels[stats[i, cv2.CC_STAT_TOP]:stats[i, cv2.CC_STAT_TOP] + h,
                                   stats[i, cv2.CC_STAT_LEFT]:stats[i, cv2.CC_STAT_LEFT] + w] == i)
        eigen = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)) + 1e-6 * np.eye(2))
        elongation = float(np.sqrt(eigen[1] / max(eigen[0], 1e-6)))
        long_and_sparse = max(w, h) >= side / 2 and area < 0.25 * w * h
        keep[i] = elongation >= min_elongation or long_and_sparse
    return keep[labels].astype(np.uint8)


def remove_hair(img: np.ndarray, kernel_size: int | None = None, threshold: int = 10,
                inpaint_radius: int | None = None) -> np.ndarray:
    """``img`` (uint8 RGB, H×W×3) with dark hairs in-painted; same shape and dtype.

    ``kernel_size``: side of the morphology element, a little wider than the hairs (default from
    the image size); ``threshold``: black-hat response (0-255) above which a pixel is hair.
    """
    import cv2

    img = _as_uint8_rgb(img)
    mask = hair_mask(img, kernel_size, threshold)
    if not mask.any():
        return img.copy()
    radius = inpaint_radius or max(1, (kernel_size or default_kernel_size(*img.shape[:2])) // 3)
    return cv2.inpaint(img, mask.astype(np.uint8), radius, cv2.INPAINT_TELEA)


def _as_uint8_rgb(img) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise UsageError(f"hair removal needs an H×W×3 RGB image, got shape {img.shape}")
    if img.dtype != np.uint8:
        img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def precompute_hair_removed(paths, out_dir, kernel_size: int | None = None, threshold: int = 10,
                            overwrite: bool = False, progress: bool = True) -> list[Path]:
    """Write hair-removed copies of ``paths`` (full resolution, PNG) to ``out_dir``; return them.

    Output names keep the source stem (``<stem>.png``); an existing output is reused unless
    ``overwrite``, so an interrupted run continues where it stopped. Progress (skinzoo.progress) is
    shown when ``progress``. Lossless PNG because re-encoding to JPEG would blur
    exactly the in-painted areas.
    """
    import cv2

    from skinzoo.fileio import atomic_path

    paths = [Path(p) for p in paths]
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise UsageError(f"two input images share the name {dup!r}; their outputs would collide",
                         "precompute each folder into its own output directory")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = []
    from skinzoo.progress import track

    with contextlib.nullcontext(track(paths, "hair removal") if progress else paths) as bar:
        for src in bar:
            dst = out_dir / f"{src.stem}.png"
            outputs.append(dst)
            if dst.exists() and not overwrite:
                continue
            bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)
            if bgr is None:
                raise DataError(f"cannot read image {src}",
                                "check the file (run `skinzoo data check`) or remove it")
            clean = remove_hair(bgr[..., ::-1], kernel_size, threshold)
            with atomic_path(dst) as tmp:
                if not cv2.imwrite(str(tmp), clean[..., ::-1]):
                    raise DataError(f"cannot write {dst}", "check free disk space and permissions")
    return outputs
