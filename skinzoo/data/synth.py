"""The built-in demo dataset: synthetic dermoscopy-like images in the HAM10000 layout.

It exists so that ``make demo`` and the tests exercise the real chain (readers, grouped splits,
pipeline, training, evaluation, Grad-CAM) on data that means something. Each class differs in
ways a small CNN can learn but not from one pixel statistic alone:

======  ====================================================================================
class   look
======  ====================================================================================
nv      round, smooth border, even medium brown, medium size
mel     irregular lobed border, mixed dark brown / black / blue-grey patches, large
bkl     tan, waxy: light stripes ("cerebriform" ridges) across it, mildly irregular
bcc     pink-pearly with thin red branching vessels and a few dark dots
akiec   red-pink, rough scaly speckle, ill-defined border
vasc    several small red-purple lobules packed together
df      small, light-brown ring with a pale centre
======  ====================================================================================

Class shares follow HAM10000's shape (nv the large majority, df and vasc rare) with a floor so
that every class has enough lesions to be split three ways at the default size. Several images
of one lesion differ by rotation, scale, shift, lighting and hair, so a split that ignores
``lesion_id`` leaks.

Age, sex and site carry some signal per class too (``MEAN_AGE``, ``MALE_SHARE``,
``TYPICAL_SITES``), drawn from their own random stream, so metadata fusion has something to learn
and the images are the same as without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from skinzoo.errors import UsageError

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
# HAM10000 has nv 67%, mel/bkl 11%, bcc 5%, akiec 3.3%, vasc 1.4%, df 1.1%; rare classes are
# lifted a little so a 700-image demo still has ~10 lesions of each after a 70/15/15 split.
SHARES = {"nv": 0.62, "mel": 0.11, "bkl": 0.10, "bcc": 0.06, "akiec": 0.045, "vasc": 0.035, "df": 0.03}
SITES = ("back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest",
         "foot", "scalp", "neck", "hand", "ear", "genital", "acral", "unknown")
MEAN_AGE = {"akiec": 67, "bcc": 66, "bkl": 59, "df": 52, "mel": 61, "nv": 46, "vasc": 50}
# Sex and body site carry some signal per class, in the direction HAM10000 shows (more men among
# akiec/bcc/mel, actinic and basal-cell lesions on sun-exposed head and hands, melanoma on the
# back, dermatofibroma on the legs): share of men, and the sites a lesion is on 60% of the time.
MALE_SHARE = {"akiec": 0.68, "bcc": 0.62, "bkl": 0.55, "df": 0.35, "mel": 0.62, "nv": 0.48, "vasc": 0.42}
TYPICAL_SITES = {"akiec": ("face", "scalp", "ear", "hand"), "bcc": ("face", "neck", "back"),
                 "bkl": ("trunk", "face", "back"), "df": ("lower extremity",),
                 "mel": ("back", "upper extremity", "trunk"), "nv": ("back", "trunk", "abdomen"),
                 "vasc": ("lower extremity", "trunk", "abdomen")}
DX_TYPE = {"nv": ("follow_up", "histo", "consensus"), "mel": ("histo",), "bkl": ("histo", "consensus"),
           "bcc": ("histo",), "akiec": ("histo",), "vasc": ("consensus", "histo"), "df": ("consensus", "histo")}


def class_counts(n_images: int) -> dict[str, int]:
    """Images per class for ``n_images`` in total (largest remainder rounding, exact sum)."""
    raw = {c: SHARES[c] * n_images for c in CLASSES}
    counts = {c: int(v) for c, v in raw.items()}
    for c in sorted(CLASSES, key=lambda c: raw[c] - counts[c], reverse=True)[: n_images - sum(counts.values())]:
        counts[c] += 1
    return counts


def make_synthetic_dataset(out, n_images: int = 700, size: int = 96, seed: int = 0,
                           overwrite: bool = False) -> pd.DataFrame:
    """Write ``HAM10000_metadata.csv`` and ``images/ISIC_*.jpg`` to ``out``; return the metadata."""
    import cv2

    out = Path(out)
    if n_images < 7 * 3:
        raise UsageError(f"--n {n_images} is too small for 7 classes", "use --n 21 or more")
    if size < 16:
        raise UsageError(f"--size {size} is too small to draw lesions", "use --size 16 or more")
    meta_path = out / "HAM10000_metadata.csv"
    if meta_path.exists() and not overwrite:
        raise UsageError(f"{out} already holds a dataset", "pass --overwrite to replace it")
    if overwrite and (out / "images").exists():
        shutil.rmtree(out / "images")
    (out / "images").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    meta_rng = np.random.default_rng([seed, 1])  # sex/site: own stream, images unchanged
    rows = []
    lesion_no = 0
    image_no = 0
    for dx, count in class_counts(n_images).items():
        made = 0
        while made < count:
            n_views = min(count - made, int(rng.choice([1, 1, 1, 2, 2, 3])))
            lesion = _lesion_params(dx, rng)
            age = float(np.clip(round(rng.normal(MEAN_AGE[dx], 14) / 5) * 5, 0, 85))
            rng.choice(2, p=[0.54, 0.46]), rng.choice(len(SITES))  # keeps the image stream as it was
            sex, site = _sex_and_site(dx, meta_rng)
            dx_type = str(rng.choice(DX_TYPE[dx]))
            for _ in range(n_views):
                image_id = f"ISIC_{24306 + image_no:07d}"
                img = render_lesion(lesion, size, rng)
                cv2.imwrite(str(out / "images" / f"{image_id}.jpg"), img[..., ::-1],
                            [cv2.IMWRITE_JPEG_QUALITY, 92])
                rows.append(dict(lesion_id=f"HAM_{lesion_no:07d}", image_id=image_id, dx=dx,
                                 dx_type=dx_type, age=age, sex=sex, localization=site))
                image_no += 1
                made += 1
            lesion_no += 1
    table = pd.DataFrame(rows)
    table.to_csv(meta_path, index=False)
    return table


def _sex_and_site(dx: str, rng: np.random.Generator) -> tuple[str, str]:
    sex = "male" if rng.random() < MALE_SHARE[dx] else "female"
    typical = rng.random() < 0.6
    site = str(rng.choice(TYPICAL_SITES[dx] if typical else SITES))
    return sex, site


# --- drawing -------------------------------------------------------------------------------

def _lesion_params(dx: str, rng: np.random.Generator) -> dict:
    """Everything that stays the same across the images of one lesion."""
    base = {
        "nv": dict(radius=0.24, irregular=0.04, color=(120, 78, 50)),
        "mel": dict(radius=0.31, irregular=0.22, color=(80, 50, 35)),
        "bkl": dict(radius=0.26, irregular=0.10, color=(170, 130, 90)),
        "bcc": dict(radius=0.21, irregular=0.08, color=(215, 150, 150)),
        "akiec": dict(radius=0.23, irregular=0.14, color=(200, 110, 100)),
        "vasc": dict(radius=0.20, irregular=0.05, color=(150, 40, 70)),
        "df": dict(radius=0.15, irregular=0.04, color=(150, 100, 70)),
    }[dx]
    n_harm = 7
    return dict(
        dx=dx,
        radius=base["radius"] * rng.uniform(0.8, 1.2),
        harm_amp=rng.normal(0, 1, n_harm) * base["irregular"] / np.arange(1, n_harm + 1) ** 0.5,
        harm_phase=rng.uniform(0, 2 * np.pi, n_harm),
        color=np.clip(np.array(base["color"]) + rng.normal(0, 12, 3), 0, 255),
        skin=np.clip(np.array((225, 180, 150)) * rng.uniform(0.75, 1.08) + rng.normal(0, 4, 3), 0, 255),
        feature_seed=int(rng.integers(2**31)),
    )


def render_lesion(p: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """One RGB uint8 view of lesion ``p``: new rotation, scale, shift, light, noise and hair."""
    import cv2

    s = size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    cx, cy = 0.5 + rng.normal(0, 0.05, 2)
    rot = rng.uniform(0, 2 * np.pi)
    radius = p["radius"] * rng.uniform(0.9, 1.1)
    dx, dy = xx - cx, yy - cy
    r = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx) + rot
    k = np.arange(1, len(p["harm_amp"]) + 1)[:, None, None]
    border = radius * (1 + (p["harm_amp"][:, None, None] * np.cos(k * theta + p["harm_phase"][:, None, None])).sum(0))
    inside = np.clip((border - r) / (0.02 + 0.03 * (p["dx"] == "akiec")), 0, 1)  # soft edge

    img = np.broadcast_to(p["skin"], (s, s, 3)).astype(np.float32).copy()
    img += rng.normal(0, 4, (s, s, 1))  # skin texture
    lesion = np.broadcast_to(p["color"], (s, s, 3)).astype(np.float32).copy()
    frng = np.random.default_rng(p["feature_seed"])  # lesion-specific features, same in every view
    rel = r / np.maximum(border, 1e-3)
    u, v = np.cos(rot) * dx - np.sin(rot) * dy, np.sin(rot) * dx + np.cos(rot) * dy
    dx_name = p["dx"]
    if dx_name == "mel":
        for _ in range(4):  # patches of black and blue-grey, fixed in lesion coordinates
            pc = frng.normal(0, 0.12, 2)
            col = frng.choice([0, 1])
            tint = np.array([(25, 20, 20), (90, 100, 125)][col], np.float32)
            w = np.exp(-((u - pc[0]) ** 2 + (v - pc[1]) ** 2) / (2 * (radius * 0.35) ** 2))
            lesion = lesion * (1 - 0.85 * w[..., None]) + tint * 0.85 * w[..., None]
    elif dx_name == "bkl":
        stripes = 0.5 + 0.5 * np.sin(u * s * 0.9 / max(1, s / 64) + 3 * np.sin(v * 9))
        lesion *= (0.85 + 0.3 * stripes)[..., None]
    elif dx_name == "bcc":
        vessels = np.zeros((s, s), np.float32)
        for _ in range(5):
            pts = (np.array([cx, cy]) + np.cumsum(frng.normal(0, radius * 0.35, (4, 2)), 0)) * s
            cv2.polylines(vessels, [pts.astype(np.int32)], False, 1.0, max(1, s // 80))
        lesion = lesion * (1 - vessels[..., None]) + np.array((190, 20, 30)) * vessels[..., None]
        for _ in range(3):
            pc = (np.array([cx, cy]) + frng.normal(0, radius * 0.4, 2)) * s
            cv2.circle(lesion, tuple(int(c) for c in pc), max(1, s // 40), (60, 50, 60), -1)
    elif dx_name == "akiec":
        speckle = rng.random((s, s)) < 0.25
        lesion[speckle] = lesion[speckle] * 0.7 + np.array((245, 235, 225)) * 0.3
    elif dx_name == "vasc":
        lesion[:] = p["skin"] * 0.9
        for _ in range(6):
            pc = frng.normal(0, 0.45, 2) * radius
            w = np.exp(-((u - pc[0]) ** 2 + (v - pc[1]) ** 2) / (2 * (radius * 0.28) ** 2))
            lesion = lesion * (1 - w[..., None]) + p["color"] * w[..., None]
    elif dx_name == "df":
        ring = np.exp(-((rel - 0.75) ** 2) / 0.03)
        centre = np.exp(-(rel**2) / 0.12)
        lesion = lesion * (0.55 + 0.45 * ring[..., None]) + np.array((250, 240, 230)) * 0.35 * centre[..., None]
    img = img * (1 - inside[..., None]) + lesion * inside[..., None]

    hairs = np.zeros((s, s), np.float32)
    for _ in range(int(rng.integers(0, 5))):
        p0 = rng.uniform(0, s, 2)
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(0.3, 1.0) * s
        mid = p0 + rng.normal(0, s * 0.1, 2)
        p1 = p0 + length * np.array([np.cos(ang), np.sin(ang)])
        curve = np.array([p0, mid, p1], np.int32)
        cv2.polylines(hairs, [curve], False, 1.0, max(1, s // 96))
    img = img * (1 - 0.8 * hairs[..., None]) + 30 * 0.8 * hairs[..., None]

    img *= rng.uniform(0.85, 1.1)  # exposure
    vignette = 1 - 0.55 * np.clip((np.hypot(xx - 0.5, yy - 0.5) - 0.45) / 0.3, 0, 1) ** 1.5
    img *= vignette[..., None]
    img += rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
