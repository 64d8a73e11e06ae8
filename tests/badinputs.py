"""Writers for every kind of bad input skinzoo must survive, for any test that needs them.

Each ``write_*(folder, name=...)`` writes one file (or link) and returns its path. ``BAD_IMAGES``
maps a short name to ``(writer, expected ImageInfo.problem)``; ``CONVERTED_IMAGES`` maps to
``(writer, expected ImageInfo.conversion)``. :func:`make_messy_dataset` builds a HAM10000-layout
dataset where a few images are broken, so a trainer/evaluator test can check that the good
images are used and the bad ones listed.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _image(size=32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = np.stack([xx * 255 // size, yy * 255 // size, (xx + yy) * 127 // size], -1)
    return np.clip(base + rng.integers(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


def _save(img, path, fmt, **kw) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)
    return path


def jpeg_bytes(size=32, seed=0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_image(size, seed)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


# --- good and convertible images --------------------------------------------------------------

def write_good_jpeg(folder, name="good.jpg", size=32, seed=0) -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes(size, seed))
    return path


def write_good_png(folder, name="good.png", size=32, seed=0) -> Path:
    from PIL import Image

    return _save(Image.fromarray(_image(size, seed)), Path(folder) / name, "PNG")


def write_grayscale_jpeg(folder, name="gray.jpg", size=32) -> Path:
    from PIL import Image

    return _save(Image.fromarray(_image(size)[..., 0]), Path(folder) / name, "JPEG")


def write_rgba_png(folder, name="rgba.png", size=32) -> Path:
    from PIL import Image

    rgba = np.dstack([_image(size), np.full((size, size), 128, np.uint8)])
    return _save(Image.fromarray(rgba, "RGBA"), Path(folder) / name, "PNG")


def write_palette_png(folder, name="palette.png", size=32) -> Path:
    from PIL import Image

    return _save(Image.fromarray(_image(size)).convert("P"), Path(folder) / name, "PNG")


def write_16bit_png(folder, name="sixteen.png", size=32) -> Path:
    """A 16-bit grayscale PNG spanning 0..65535 (top-left 0, bottom-right 65535)."""
    from PIL import Image

    ramp = np.linspace(0, 65535, size * size).reshape(size, size).astype(np.uint16)
    return _save(Image.fromarray(ramp), Path(folder) / name, "PNG")


def write_cmyk_jpeg(folder, name="cmyk.jpg", size=32) -> Path:
    from PIL import Image

    return _save(Image.fromarray(_image(size)).convert("CMYK"), Path(folder) / name, "JPEG")


def write_nonascii_name(folder, name="läsion ü (1) 皮膚.jpg", size=32) -> Path:
    return write_good_jpeg(folder, name, size)


# --- unusable files -----------------------------------------------------------------------

def write_zero_byte(folder, name="zero.jpg") -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_truncated_jpeg(folder, name="truncated.jpg", size=96) -> Path:
    data = jpeg_bytes(size)  # 96 px: enough scan data that a 75% cut leaves the header whole
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * 0.75)])
    return path


def write_random_bytes(folder, name="random.jpg", n=2048, seed=0) -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def write_text_as_image(folder, name="notes.png") -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("lesion notes: see the clinic report\n", encoding="utf-8")
    return path


def write_html_as_image(folder, name="download.jpg") -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<!DOCTYPE html><html><body>403 Forbidden</body></html>", encoding="utf-8")
    return path


def write_tiny_image(folder, name="tiny.png") -> Path:
    from PIL import Image

    return _save(Image.new("RGB", (1, 1), (200, 100, 50)), Path(folder) / name, "PNG")


def write_huge_png(folder, name="huge.png", side=12000) -> Path:
    """A small file whose PNG header claims ``side`` x ``side`` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) \
        + chunk(b"IEND", b"")
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def write_unreadable(folder, name="locked.jpg") -> Path:
    """A good JPEG with no read permission (root can still read it: tests skip then)."""
    path = write_good_jpeg(folder, name)
    path.chmod(0)
    return path


def write_symlink_loop(folder, name="loop.jpg") -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(name, path)  # relative link to itself
    return path


def write_broken_symlink(folder, name="dangling.jpg") -> Path:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("does-not-exist.jpg", path)
    return path


def write_folder_named_like_image(folder, name="folder.jpg") -> Path:
    path = Path(folder) / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_tiff_as_jpg(folder, name="scan.jpg", size=32) -> Path:
    """TIFF bytes behind a .jpg name: Pillow reads it, TensorFlow's decoders do not."""
    from PIL import Image

    return _save(Image.fromarray(_image(size)), Path(folder) / name, "TIFF")


def write_palette_bmp(folder, name="palette.bmp", size=32) -> Path:
    """An 8-bit colour-palette BMP: TensorFlow decodes its palette indices as gray."""
    from PIL import Image

    return _save(Image.fromarray(_image(size)).convert("P"), Path(folder) / name, "BMP")


def write_fifo(folder, name="pipe.jpg") -> Path:
    """A named pipe with an image name: opening it for reading blocks until a writer comes."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def write_socket(folder, name="socket.jpg") -> Path:
    """A Unix socket file with an image name (open() fails with ENXIO)."""
    import socket

    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    # AF_UNIX paths are limited to ~107 bytes: bind from inside the folder with a short name.
    old = os.getcwd()
    os.chdir(path.parent)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(name)
        sock.close()  # the socket file stays behind, as after a crashed server
    finally:
        os.chdir(old)
    return path


def write_device_link(folder, name="zeros.jpg", device="/dev/zero") -> Path:
    """A symlink to an endless device: read to the end, it never ends."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(device, path)
    return path


SECRET = "root:x:0:0:SKINZOO-SECRET-MARKER:/root:/bin/bash\n"


def write_outside_link(folder, name="passwd.jpg", secret_dir=None) -> Path:
    """A symlink named .jpg to a private text file outside the dataset (a stand-in for
    /etc/passwd holding :data:`SECRET`): it must never be read, and its text never printed."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    secret_dir = Path(secret_dir) if secret_dir else path.parent.parent.parent / "private"
    secret_dir.mkdir(parents=True, exist_ok=True)
    target = secret_dir / "passwd"
    target.write_text(SECRET)
    os.symlink(target, path)
    return path


def write_text_secret(folder, name="secret.jpg") -> Path:
    """A text file holding :data:`SECRET` named .jpg: reported as text, its words never quoted."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SECRET)
    return path


def png_bytes(size=32, seed=0) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_image(size, seed)).save(buf, "PNG")
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_cut_idat_png(folder, name="cut_idat.png", size=64) -> Path:
    """A PNG whose IDAT stream is cut in half but re-chunked with a valid CRC and an IEND after
    it: every end marker is there, the pixels are not (TensorFlow: "Invalid PNG data")."""
    data = png_bytes(size)
    start = data.index(b"IDAT") - 4
    n = struct.unpack(">I", data[start:start + 4])[0]
    idat = data[start + 8:start + 8 + n][: n // 2]
    body = data[:start] + _png_chunk(b"IDAT", idat) + data[start + 12 + n:]
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def write_cut_scan_jpeg(folder, name="cut_scan.jpg", size=96) -> Path:
    """A JPEG whose scan data is cut in the middle with the EOI marker kept: libjpeg fills the
    rest with gray and only prints "Corrupt JPEG data" (trained on silently before)."""
    data = jpeg_bytes(size)
    sos = data.index(b"\xff\xda")
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: sos + (len(data) - sos) // 2] + b"\xff\xd9")
    return path


def write_truncated_png(folder, name="truncated.png", size=64) -> Path:
    """A PNG cut at 60%: a partial write (no IEND)."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = png_bytes(size)
    path.write_bytes(data[: int(len(data) * 0.6)])
    return path


def write_truncated_bmp(folder, name="truncated.bmp", size=32) -> Path:
    """A 24-bit BMP cut at 60% (header whole, pixel rows missing)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_image(size)).save(buf, "BMP")
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue()[: int(len(buf.getvalue()) * 0.6)])
    return path


def write_header_only_jpeg(folder, name="header_only.jpg") -> Path:
    """A partial write that stopped after 20 bytes: SOI and part of APP0."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(jpeg_bytes()[:20])
    return path


def write_strip_png(folder, name="strip.png", width=20000, height=8) -> Path:
    """A small PNG with an extreme aspect ratio: crop mode would upscale it 28x to a huge tensor."""
    from PIL import Image

    return _save(Image.new("RGB", (width, height), (120, 80, 60)), Path(folder) / name, "PNG")


def write_gray_letterbox_jpeg(folder, name="letterbox.jpg", size=64) -> Path:
    """A GOOD JPEG whose bottom rows are exactly gray 128 (letterboxed): must not be taken for a
    cut-short file, whose missing blocks libjpeg also fills with gray 128."""
    from PIL import Image

    img = _image(size)
    img[size // 2:] = 128
    return _save(Image.fromarray(img), Path(folder) / name, "JPEG", quality=95)


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


BAD_IMAGES = {
    "zero_byte": (write_zero_byte, "zero_byte"),
    "truncated_jpeg": (write_truncated_jpeg, "truncated"),
    "random_bytes": (write_random_bytes, "not_image"),
    "text_as_png": (write_text_as_image, "not_image"),
    "html_as_jpg": (write_html_as_image, "not_image"),
    "tiny_1x1": (write_tiny_image, "too_small"),
    "huge_header": (write_huge_png, "too_large"),
    "symlink_loop": (write_symlink_loop, "symlink_loop"),
    "broken_symlink": (write_broken_symlink, "missing"),
    "tiff_as_jpg": (write_tiff_as_jpg, "unsupported"),
    "palette_bmp": (write_palette_bmp, "unsupported"),
    "fifo": (write_fifo, "not_regular"),
    "socket": (write_socket, "not_regular"),
    "device_link": (write_device_link, "not_regular"),
    "cut_idat_png": (write_cut_idat_png, "truncated"),
    "cut_scan_jpeg": (write_cut_scan_jpeg, "truncated"),
    "truncated_png": (write_truncated_png, "truncated"),
    "truncated_bmp": (write_truncated_bmp, "truncated"),
    "header_only_jpeg": (write_header_only_jpeg, "truncated"),
    "strip_png": (write_strip_png, "extreme_aspect"),
    "text_secret": (write_text_secret, "not_image"),
}
if not running_as_root():
    BAD_IMAGES["unreadable"] = (write_unreadable, "unreadable")

GOOD_LOOKALIKES = {  # good files that resemble bad ones: must stay usable
    "gray_letterbox_jpeg": write_gray_letterbox_jpeg,
}

CONVERTED_IMAGES = {
    "grayscale": (write_grayscale_jpeg, "grayscale"),
    "rgba": (write_rgba_png, "rgba"),
    "palette": (write_palette_png, "palette"),
    "16bit": (write_16bit_png, "16bit"),
    "cmyk": (write_cmyk_jpeg, "cmyk"),
}


# --- a dataset with bad files mixed in ------------------------------------------------------

@dataclass
class MessyDataset:
    """Where the messy dataset is and what is wrong with it."""

    root: Path
    bad: dict[str, str] = field(default_factory=dict)  # image_id -> expected problem kind
    converted: dict[str, str] = field(default_factory=dict)  # image_id -> conversion
    missing_rows: list[str] = field(default_factory=list)  # metadata rows with no image file
    n_rows: int = 0  # rows in the metadata CSV

    @property
    def n_good(self) -> int:
        """Images a trainer should use (converted ones included)."""
        return self.n_rows - len(self.bad) - len(self.missing_rows)


def make_messy_dataset(folder, n_images=140, size=32, seed=0) -> MessyDataset:
    """A synthetic HAM10000-layout dataset in which some ``nv`` images are replaced by broken
    files (zero-byte, truncated, random bytes, HTML, 1x1, decompression bomb, symlink loop),
    two are converted kinds (grayscale, RGBA), and one metadata row has no image at all.
    Rare classes are left intact so the dataset stays trainable."""
    import pandas as pd

    from skinzoo.data.synth import make_synthetic_dataset

    root = Path(folder)
    meta = make_synthetic_dataset(root, n_images=n_images, size=size, seed=seed)
    images = root / "images"
    nv = meta.loc[meta["dx"] == "nv", "image_id"].tolist()
    plan = [("zero_byte", write_zero_byte), ("truncated", write_truncated_jpeg),
            ("not_image", write_random_bytes), ("not_image", write_html_as_image),
            ("too_small", write_tiny_image), ("too_large", write_huge_png),
            ("symlink_loop", write_symlink_loop)]
    messy = MessyDataset(root=root)
    for (kind, writer), image_id in zip(plan, nv, strict=False):
        (images / f"{image_id}.jpg").unlink()
        writer(images, name=f"{image_id}.jpg")
        messy.bad[image_id] = kind
    for (kind, writer), image_id in zip([("grayscale", write_grayscale_jpeg),
                                         ("rgba", write_rgba_png)], nv[len(plan):], strict=False):
        (images / f"{image_id}.jpg").unlink()
        ext = ".jpg" if kind == "grayscale" else ".png"
        writer(images, name=f"{image_id}{ext}", size=size)
        messy.converted[image_id] = kind
    ghost = dict(meta.iloc[0])
    ghost.update(image_id="ISIC_9999999", lesion_id="HAM_9999999", dx="nv")
    meta = pd.concat([meta, pd.DataFrame([ghost])], ignore_index=True)
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    messy.missing_rows.append("ISIC_9999999")
    messy.n_rows = len(meta)
    return messy
