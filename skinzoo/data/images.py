"""Reading one image safely, and telling what is wrong with one that cannot be read.

:func:`inspect_image` is the cheap per-file check used by ``skinzoo data check`` on whole datasets:
it reads the bytes once (for the duplicate hash), parses only the header (size, mode, format) and
decodes the pixels (JPEG at 1/8 scale in the DCT domain: every byte is still entropy-decoded),
because an end marker proves nothing: a PNG whose IDAT stream is cut short keeps its IEND, a JPEG
cut mid-scan may keep its EOI. :func:`read_image_rgb` is the full read used where a NumPy image is needed.

Problem kinds (``ImageInfo.problem``), all of which make an image unusable:

==============  ==========================================================================
missing         no such file (or a dangling symlink, or a file deleted after listing)
symlink_loop    the path is a symlink that points back at itself
unreadable      the file exists but cannot be opened (permissions)
not_regular     not a regular file once links are followed: a FIFO, socket, device (a link to
                ``/dev/zero``) or a folder named ``x.jpg``; never opened for reading, so a FIFO
                cannot block and a device cannot be read without end
zero_byte       the file is empty
not_image       the bytes are not an image Pillow knows (random bytes, text, an HTML page)
truncated       the header is fine but the pixel data stops early (an interrupted download),
                also when the cut is in the middle and the end marker survived
too_large       more than ``MAX_PIXELS`` pixels (refused from the header, never decoded) or a
                file over ``MAX_FILE_BYTES`` (refused from its size, never read)
too_small       a side below ``MIN_SIDE`` pixels (a 1x1 tracking pixel, a thumbnail stub)
extreme_aspect  one side more than ``MAX_ASPECT`` times the other (a thin strip): resizing it to a
                square input would upscale it to a huge tensor, and no lesion photo looks so
unsupported     an image TensorFlow's decoders (the training pipeline) cannot read right:
                TIFF/ICO/... content, 1-bit BMP, colour-palette BMP (decoded as gray indices)
==============  ==========================================================================

Messages never quote a file's bytes: a link to a private file must not leak its contents into a
console, a JSON report or ``problems.csv``.

Colour modes other than 8-bit RGB (grayscale, RGBA, palette, CMYK, 16-bit) are usable: they are
converted to RGB on read and counted (``ImageInfo.conversion``).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import sys
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from skinzoo.errors import DataError
from skinzoo.fileio import NotRegularFile, read_regular_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# 100 megapixels: far above any dermoscopy or X-ray image (HAM10000 originals are 0.27 MP), far
# below what would exhaust memory when decoded (100 MP RGB is 300 MB as uint8).
MAX_PIXELS = 100_000_000
# Below this no model input size makes sense; the smallest zoo input is 32 px.
MIN_SIDE = 8
# Crop mode scales the short side to the input size, so the work per image grows with the aspect
# ratio: a 8 x 500,000 px strip would become a multi-gigabyte float tensor. Dermoscopy photos and
# X-rays are within 2:1; 10:1 leaves room for odd crops and bounds the upscaled image to 10x the
# input's pixels.
MAX_ASPECT = 10
# No image file skinzoo reads is this large (a 100 MP PNG compresses to far less); checked from
# the file's size before reading, so a huge or endless file is never read into memory.
MAX_FILE_BYTES = 256 * 2**20

UNUSABLE_KINDS = ("missing", "symlink_loop", "unreadable", "not_regular", "zero_byte", "not_image",
                  "truncated", "too_large", "too_small", "extreme_aspect", "unsupported")
# What tf.io.decode_image / decode_jpeg (skinzoo.data.pipeline) can decode; MPO is a JPEG.
PIPELINE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
_CONVERSIONS = {"L": "grayscale", "1": "grayscale", "LA": "grayscale", "RGBA": "rgba",
                "RGBa": "rgba", "RGBX": "rgba", "P": "palette", "PA": "palette", "CMYK": "cmyk",
                "YCbCr": "ycbcr", "LAB": "lab", "HSV": "hsv", "I;16": "16bit", "I;16B": "16bit",
                "I;16L": "16bit", "I;16N": "16bit", "I": "16bit", "F": "float"}


@dataclass
class ImageInfo:
    """What :func:`inspect_image` found out about one file.

    ``ok`` is False exactly when ``problem`` is set; ``conversion`` names a colour mode that is
    usable but converted to RGB on read (``"grayscale"``, ``"rgba"``, ``"palette"``, ``"cmyk"``,
    ``"16bit"``...). ``digest`` is the BLAKE2b hash of the file's bytes (for duplicate search).
    """

    path: str
    ok: bool
    problem: str | None = None
    message: str = ""
    width: int | None = None
    height: int | None = None
    mode: str | None = None
    format: str | None = None
    conversion: str | None = None
    n_bytes: int | None = None
    digest: str | None = None

    @property
    def converted(self) -> bool:
        return self.conversion is not None

    def to_dict(self) -> dict:
        return asdict(self)


def _pil():
    # Pillow comes with matplotlib; imported here so `skinzoo --help` never pays for it.
    from PIL import Image

    return Image


def inspect_image(path, decode: str = "auto", with_digest: bool = False) -> ImageInfo:
    """Check one image file without trusting it; never raises for a bad file.

    ``decode``: ``"auto"`` decodes every file, JPEGs at 1/8 scale (every byte is still
    entropy-decoded, a tenth of the work); ``"always"`` decodes JPEGs at full size too (slower);
    ``"never"`` reads the header only.
    """
    path = str(path)
    data, info = _read_bytes(path)
    if info is not None:
        return info
    return _inspect_bytes(path, data, decode, with_digest)


def _inspect_bytes(path: str, data: bytes, decode: str, with_digest: bool) -> ImageInfo:
    info = ImageInfo(path=path, ok=True, n_bytes=len(data))
    if with_digest:
        info.digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    if not data:
        return _fail(info, "zero_byte", "is an empty file (0 bytes)")
    Image = _pil()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return _fail(info, "too_large", f"has more than {MAX_PIXELS // 1_000_000} megapixels "
                     "(refused from its header: decoding it could exhaust memory)")
    except Exception as err:  # noqa: BLE001 - Pillow raises many types for garbage input
        if _looks_truncated_header(data, err):
            return _fail(info, "truncated", "is truncated: cut off inside its header (an interrupted copy?)")
        return _fail(info, "not_image", f"is not an image ({_describe_bytes(data)})")
    info.width, info.height = img.size
    info.mode, info.format = img.mode, img.format
    if info.width * info.height > MAX_PIXELS:
        return _fail(info, "too_large", f"is {info.width}x{info.height} = "
                     f"{info.width * info.height / 1e6:.0f} megapixels, more than the "
                     f"{MAX_PIXELS // 1_000_000} MP limit (refused from its header)")
    if min(info.width, info.height) < MIN_SIDE:
        return _fail(info, "too_small", f"is only {info.width}x{info.height} pixels "
                     f"(unusable below {MIN_SIDE} px)")
    if max(info.width, info.height) > MAX_ASPECT * min(info.width, info.height):
        return _fail(info, "extreme_aspect", f"is {info.width}x{info.height} pixels, more than "
                     f"{MAX_ASPECT}:1 (resizing such a strip to the model's square input would "
                     "blow it up to a huge image)")
    unsupported = _pipeline_problem(img)
    if unsupported:
        return _fail(info, "unsupported", unsupported)
    if decode in ("auto", "always"):
        problem = _decode_problem(img, data, full_size=decode == "always")
        if problem:
            return _fail(info, "truncated", problem)
    info.conversion = _CONVERSIONS.get(img.mode)
    return info


def read_image_rgb(path) -> np.ndarray:
    """Decode ``path`` to an RGB ``uint8`` array ``(H, W, 3)``; raise ``DataError`` when unusable.

    Grayscale, palette, CMYK and 16-bit images are converted; alpha is dropped (not composited)
    because that is what ``tf.io.decode_image(channels=3)`` does, so an image looks the same to
    every reader in skinzoo.
    """
    data, info = _read_bytes(str(path))
    if info is None:
        info = _inspect_bytes(str(path), data, decode="never", with_digest=False)
    if not info.ok:
        raise DataError(f"{path} {info.message}", hint_for(info.problem))
    Image = _pil()
    try:  # decoded from the bytes already checked: the path may have changed since
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if img.format in ("JPEG", "MPO") and _gray_filled(img) and _libjpeg_warning(data):
                raise OSError("its scan data stops early (libjpeg filled the rest with gray)")
            return to_rgb_array(img)
    except OSError as err:
        raise DataError(f"{path} could not be decoded: {err}",
                        "the file is damaged: replace it, or remove it from the dataset") from None


def to_rgb_array(img) -> np.ndarray:
    """A loaded Pillow image as RGB uint8; 16-bit and float images are rescaled, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        # 16-bit scans use the full 0..65535 range; Pillow's convert("RGB") would clip them to white.
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        if img.mode == "F":
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
            arr, top = arr - lo, max(hi - lo, 1e-12)
        gray = np.clip(np.rint(arr / top * 255.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


# --- helpers -------------------------------------------------------------------------------

def _read_bytes(path: str) -> tuple[bytes, ImageInfo | None]:
    """The file's bytes, or an ImageInfo saying why they cannot be read."""
    try:
        return read_regular_bytes(path, MAX_FILE_BYTES), None
    except NotRegularFile as err:
        kind = "too_large" if err.too_large else "not_regular"
        return b"", _fail(ImageInfo(path=path, ok=True), kind,
                          str(err) + ("" if err.too_large else " (skipped without reading it)"))
    except FileNotFoundError:
        if os.path.islink(path):
            return b"", _fail(ImageInfo(path=path, ok=True), "missing",
                              f"is a broken symlink (to {os.readlink(path)})")
        return b"", _fail(ImageInfo(path=path, ok=True), "missing", "does not exist")
    except PermissionError:
        return b"", _fail(ImageInfo(path=path, ok=True), "unreadable",
                          "cannot be read (permission denied)")
    except OSError as err:
        if err.errno == errno.ELOOP:
            return b"", _fail(ImageInfo(path=path, ok=True), "symlink_loop",
                              "is a symlink loop (it points back at itself)")
        return b"", _fail(ImageInfo(path=path, ok=True), "unreadable",
                          f"cannot be read ({err.strerror or err})")


def _fail(info: ImageInfo, kind: str, message: str) -> ImageInfo:
    info.ok, info.problem, info.message = False, kind, message
    return info


def _pipeline_problem(img) -> str | None:
    """Why TensorFlow's decoders would fail on (or mis-decode) an image Pillow reads fine."""
    if img.format not in PIPELINE_FORMATS:
        return (f"is a {img.format} file, which the training pipeline cannot decode "
                f"(it reads {', '.join(f for f in PIPELINE_FORMATS if f != 'MPO')})")
    if img.format == "BMP" and img.mode == "1":
        return "is a 1-bit BMP, which the training pipeline cannot decode"
    if img.format == "BMP" and img.mode == "P":
        palette = img.getpalette() or []
        gray = all(palette[3 * i: 3 * i + 3] in ([i, i, i], []) for i in range(256))
        if not gray:
            return ("is a colour-palette BMP, which TensorFlow decodes as gray palette indices "
                    "(wrong colours)")
    return None


def _decode_problem(img, data: bytes, full_size: bool = False) -> str | None:
    """Decode the pixels; return a message when they are truncated or corrupt."""
    try:
        if img.format == "JPEG" and not full_size:
            # DCT scaling: 1/8 of the IDCT work, but every byte is still entropy-decoded.
            img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
        img.load()
    except (OSError, SyntaxError, ValueError) as err:
        text = str(err)
        if "truncated" in text.lower() or "not enough image data" in text.lower():
            return "is truncated: its pixel data stops early (an interrupted download or copy?)"
        return f"could not be decoded ({text.splitlines()[0][:120] if text else 'corrupt data'})"
    if img.format in ("JPEG", "MPO") and _gray_filled(img) and _libjpeg_warning(data):
        return ("is truncated: its scan data stops early and libjpeg fills the rest with gray "
                "(an interrupted download or copy whose end marker survived)")
    return None


def _gray_filled(img) -> bool:
    """True when the bottom row is exactly mid-gray: what libjpeg outputs for every block after
    the data ran out (all coefficients zero). A cheap pre-test; rare true images (letterboxed
    with gray 128) are confirmed or cleared by :func:`_libjpeg_warning`."""
    if img.mode not in ("RGB", "L"):
        return False
    return bool((np.asarray(img)[-1:] == 128).all())


_STDERR_LOCK = threading.Lock()


def _libjpeg_warning(data: bytes) -> bool:
    """Whether libjpeg warns "Corrupt JPEG data" / "Premature end" decoding ``data``.

    Pillow silences libjpeg's warnings and exposes no count, so the file is decoded once more
    with OpenCV, whose libjpeg prints them to file descriptor 2, captured here. Only files that
    already look gray-filled get here (rare), so the lock costs nothing in practice; lines from
    other threads caught in the window are passed on.
    """
    import cv2

    buf = np.frombuffer(data, np.uint8)
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):
            return False
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_8)
            finally:
                os.dup2(saved, 2)
                os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode("utf-8", "replace").splitlines()
    warned = [ln for ln in lines if "Corrupt JPEG data" in ln or "Premature end of JPEG" in ln]
    others = [ln for ln in lines if ln not in warned and ln.strip()]
    if others:
        print("\n".join(others), file=sys.stderr)
    return bool(warned)


def _looks_truncated_header(data: bytes, err: Exception) -> bool:
    starts_like_image = data[:3] == b"\xff\xd8\xff" or data[:8] == b"\x89PNG\r\n\x1a\n" \
        or data[:2] == b"BM"
    # A file that starts with an image signature but whose header cannot be parsed is a partial
    # write or download (Pillow says "truncated" for some cuts, "cannot identify" for others).
    return starts_like_image and ("runcat" in str(err) or len(data) < 4096)


def _describe_bytes(data: bytes) -> str:
    """A short guess at what a non-image file really is, for the error message. Only the kind
    of file is named, never its bytes: the file may be private (a link to /etc/passwd)."""
    head = data[:512]
    low = head.lower().lstrip()
    if low.startswith((b"<!doctype html", b"<html")) or b"<html" in low:
        return "it is an HTML page (a failed download?)"
    if low.startswith(b"<?xml") or low.startswith(b"<svg"):
        return "it is XML/SVG text"
    if head[:4] == b"%PDF":
        return "it is a PDF document"
    if head[:2] == b"PK":
        return "it is a ZIP archive"
    try:
        text = head.decode("utf-8")
        if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
            return "it is a text file"
    except UnicodeDecodeError:
        pass
    return "unrecognised binary data"


def hint_for(kind: str | None) -> str:
    """What a user should do about an image problem of ``kind``."""
    return {
        "missing": "check the path, or remove the row from the dataset",
        "symlink_loop": "replace the symlink with the real file",
        "unreadable": "fix the file permissions (chmod a+r) or remove the file",
        "not_regular": "replace it with the image file itself, or remove it from the dataset",
        "extreme_aspect": "crop the image to the lesion, or remove it from the dataset",
        "too_large": "downscale the image (e.g. to 1024 px) before using it",
        "too_small": "remove the image: it holds no usable detail",
        "unsupported": "convert it to PNG or JPEG (e.g. with Pillow or ImageMagick)",
    }.get(kind or "", "replace the file with a good copy, or remove it from the dataset")


def list_image_files(folder) -> list[Path]:
    """Image files below ``folder`` (recursive, case-insensitive extensions, sorted).

    Hidden files are skipped: macOS copies leave ``._name.jpg`` resource forks beside real
    images, and they are never images.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                found.append(Path(dirpath) / name)
    return sorted(found)
