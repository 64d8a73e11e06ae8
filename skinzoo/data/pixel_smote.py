"""SMOTE on the pixels of training images (``--balance smote*`` for small inputs).

Above both :mod:`skinzoo.data.balance` (the resampling and the memory estimate) and
:mod:`skinzoo.data.pipeline` (the decode + resize that reads the files), so neither of those
imports the other.
"""

from __future__ import annotations

import numpy as np

from skinzoo.data.balance import check_pixel_smote_memory, resample_features
from skinzoo.data.pipeline import image_hw, load_images
from skinzoo.errors import UsageError


def smote_pixels(images, y, img_size, method: str = "smote", seed: int = 0,
                 memory_limit_bytes: int | None = None, resize: str = "crop", k_neighbors: int = 5):
    """SMOTE on flattened pixels of the TRAINING split: (uint8 (N', H, W, 3), int labels (N',)).

    ``images``: a uint8/float array (N, H, W, 3) already at ``img_size``, or a list of paths
    (loaded with the pipeline's decode + resize). The memory need is estimated BEFORE anything
    is loaded; above ``memory_limit_bytes`` (default: half the available memory) a ResourceError
    states the estimate. Only sensible for small images and sets; otherwise use embeddings.
    """
    h, w = image_hw(img_size)
    check_pixel_smote_memory(y, (h, w), memory_limit_bytes)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        if images.shape[1:] != (h, w, 3):
            raise UsageError(f"images have shape {images.shape[1:]}, expected {(h, w, 3)} for img_size")
        pixels = images
    else:
        pixels = load_images(list(images), (h, w), resize=resize)
    if len(pixels) != len(y):
        raise UsageError(f"{len(pixels)} images but {len(y)} labels")
    flat = np.asarray(pixels, np.float32).reshape(len(pixels), -1)
    X_res, y_res = resample_features(flat, y, method=method, seed=seed, k_neighbors=k_neighbors)
    out = np.clip(np.rint(X_res), 0, 255).astype(np.uint8).reshape(-1, h, w, 3)
    return out, y_res
