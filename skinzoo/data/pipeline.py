"""The tf.data input pipeline: read, decode, resize, cache, shuffle, augment, batch.

Stages, in order (``make_dataset``)::

    paths ─► read + decode (parallel) ─► resize to img_size ─► [hair removal]
          ─► uint8 ─► [cache: memory or file]  (or float32 straight on, when not cached)
          ─► zip targets/weights ─► [shuffle] ─► [augment] ─► batch ─► float32 ─► prefetch

- Decoding and resizing are skinzoo.data.decode's: files are grouped by their decode plan (read
  from each JPEG's header when the dataset is made, ~10 us a file), each group is loaded by a
  straight-line function and the groups are merged back into file order; a stream shuffled before
  decoding (uncached training) uses one plan when all its files share it, else decides per image.
- Images leave the pipeline as float32 in [0, 255]; pixel preprocessing belongs to the model.
- Decoded images are cached as uint8 after resizing (4× smaller than float32), so epoch 2+ decodes
  no file; augmentation comes after the cache so every epoch sees new variants.
- A file cache's name is a hash of everything that determines its contents (paths, their sizes and
  mtimes, img_size, resize mode, hair removal, pipeline version): a changed setting never reuses a
  stale cache.
- Augmentation uses stateless random ops with seeds drawn from a seeded
  ``tf.data.Dataset.random`` stream that is re-randomised every epoch: the same seed gives the same
  batches, every epoch gets new variants, and validation/test datasets are never augmented.

Unreadable files: inputs are validated upstream (``skinzoo data check`` and the dataset readers
drop files that do not decode), so the pipeline does NOT silently skip errors — dropping an element
would misalign evaluation outputs with their paths. ``make_dataset`` checks up front that every
path exists and is non-empty (DataError listing the missing ones); a file that exists but fails to
decode stops the epoch with TensorFlow's error, and :func:`load_images` names the file.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from skinzoo import runtime
from skinzoo.data.augment import augment_image, resolve_augment
from skinzoo.data.decode import RESIZE_MODES, DecodePlan, decode_and_resize, decode_plan
from skinzoo.data.hair import remove_hair
from skinzoo.data.mixing import mix_batch
from skinzoo.errors import DataError, ResourceError, UsageError

log = logging.getLogger(__name__)

PIPELINE_VERSION = 3  # bump when decode/resize changes, so old file caches are not reused
SHUFFLE_BUFFER_BYTES = 256 * 2**20  # after a file cache, shuffle within this much decoded data


# --- small pieces --------------------------------------------------------------------------------

def image_hw(img_size) -> tuple[int, int]:
    """(height, width) from an int or an (h, w) pair."""
    if isinstance(img_size, (int, np.integer)):
        h = w = int(img_size)
    else:
        try:
            h, w = (int(v) for v in img_size)
        except (TypeError, ValueError):
            raise UsageError(f"image size {img_size!r} is not a number or (height, width)",
                             "use e.g. --img-size 224") from None
    if h < 8 or w < 8:
        raise UsageError(f"image size {h}x{w} is too small", "use at least 8 pixels per side")
    return h, w


def encode_targets(labels, num_classes: int) -> np.ndarray:
    """Targets for int class indices: one-hot (N, K) when K > 2, (N, 1) 0/1 when K == 2."""
    labels = np.asarray(labels)
    if num_classes < 2:
        raise UsageError(f"need at least 2 classes, got {num_classes}")
    if labels.ndim != 1:
        raise UsageError(f"labels must be a 1-D list of class indices, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = labels[(labels < 0) | (labels >= num_classes)][0]
        raise DataError(f"label index {bad} is outside 0..{num_classes - 1}",
                        "labels must be class indices into the class list")
    labels = labels.astype(np.int64)
    if num_classes == 2:
        return labels.astype(np.float32)[:, None]
    return np.eye(num_classes, dtype=np.float32)[labels]


def _check_paths(paths) -> list[str]:
    paths = [os.fspath(p) for p in paths]
    missing = [p for p in paths if not os.path.isfile(p) or os.path.getsize(p) == 0]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{len(missing)} image file(s) missing or empty: {shown}",
                        "run `skinzoo data check` on the dataset; it lists and drops unusable files")
    return paths


def _hair_removed(image_uint8):
    tf = runtime.tf()
    out = tf.numpy_function(lambda im: remove_hair(im), [image_uint8], tf.uint8, stateful=False)
    return tf.ensure_shape(out, image_uint8.shape)


def image_loader(target_hw, resize: str, hair_removal: bool, plan: DecodePlan | None = None,
                 dtype: str = "uint8"):
    """A TF function path -> (th, tw, 3) image: read, decode, resize, optional hair removal.

    The one loader of every image stream here, public so that tools above the pipeline
    (skinzoo.data.augmented_copy) make their images exactly as training does. ``plan``: the decode
    decisions shared by every file it will load (skinzoo.data.decode); None decides per image.
    ``dtype``: uint8 for caches (4x smaller), float32 (the same values) for uncached streams."""
    tf = runtime.tf()
    if resize not in RESIZE_MODES:
        raise UsageError(f"unknown resize mode {resize!r}", f"use one of {', '.join(RESIZE_MODES)}")

    def load(path):
        # hair removal works on uint8, so its images are cast afterwards when float32 is asked
        image = decode_and_resize(tf.io.read_file(path), target_hw, resize, plan,
                                  "uint8" if hair_removal else dtype)
        if hair_removal:
            image = _hair_removed(image)
            if dtype == "float32":
                image = tf.cast(image, tf.float32)
        return image

    return load


def _decode_plans(paths, target_hw) -> list[DecodePlan | None]:
    """Each file's decode plan from its header (~10 us a file: 0.1 s for 10,000)."""
    return [decode_plan(p, target_hw) for p in paths]


def shared_plan(paths, target_hw) -> DecodePlan | None:
    """The plan every one of ``paths`` shares (the usual case: a dataset of one camera's JPEGs),
    else None: a stream that is shuffled before decoding cannot be split by plan."""
    plans = set(_decode_plans(paths, target_hw))
    return plans.pop() if len(plans) == 1 else None


def _loaded_in_order(paths, target_hw, resize, hair_removal, dtype):
    """Dataset of ``dtype`` images for ``paths`` in order, each group of files that share a decode
    plan loaded by its own straight-line function (skinzoo.data.decode), the groups merged back
    into file order by a precomputed choice sequence."""
    tf = runtime.tf()
    plans = _decode_plans(paths, target_hw)
    distinct = sorted(set(plans), key=lambda plan: (plan is not None, plan or (0, False)))

    def stream(plan, group):
        return _path_stream(group).map(image_loader(target_hw, resize, hair_removal, plan, dtype),
                                       num_parallel_calls=tf.data.AUTOTUNE)

    if len(distinct) == 1:
        return stream(distinct[0], paths)
    streams = [stream(plan, [p for p, q in zip(paths, plans, strict=True) if q == plan])
               for plan in distinct]
    index = {plan: i for i, plan in enumerate(distinct)}
    choice = np.array([index[q] for q in plans], np.int64)
    return tf.data.Dataset.choose_from_datasets(streams, tf.data.Dataset.from_tensor_slices(choice))


# --- cache ----------------------------------------------------------------------------------------

def cache_key(paths, img_size, resize: str, hair_removal: bool) -> str:
    """Hex digest of everything that determines cached images (order-sensitive, like the cache)."""
    h = hashlib.sha256()
    h.update(f"v{PIPELINE_VERSION}|{image_hw(img_size)}|{resize}|{bool(hair_removal)}|".encode())
    for p in paths:
        st = os.stat(p)
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_file_cache(cache_dir, key: str) -> str | None:
    """The cache file prefix for ``key`` in ``cache_dir``, with stale partial files removed.

    tf.data writes ``<prefix>_0.lockfile`` and temp shards while filling a cache and renames them to
    ``<prefix>.index`` / ``<prefix>.data-*`` when an epoch completes. A killed run leaves the lock
    behind and the next run would fail with "concurrent caching iterator". We record our pid in
    ``<prefix>.owner``; a lock whose owner is gone is removed. Returns None (caller runs uncached)
    when another live process is filling the same cache right now.
    """
    cache_dir = Path(cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create cache directory {cache_dir}: {err.strerror}",
                         "pass a writable --cache directory or --cache memory") from None
    prefix = str(cache_dir / f"skinzoo-{key}")
    owner = Path(prefix + ".owner")
    if os.path.exists(prefix + ".index"):
        return prefix  # complete cache: tf.data only reads it
    locks = glob.glob(glob.escape(prefix) + "_*.lockfile")
    if locks:
        try:
            pid = int(owner.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pid = None
        if pid is not None and pid != os.getpid() and _pid_alive(pid):
            log.warning("cache %s is being written by process %d; this run reads images uncached",
                        prefix, pid)
            return None
        if pid == os.getpid():
            return None  # an iterator in this process is filling it right now
        for stale in glob.glob(glob.escape(prefix) + "_*"):
            log.info("removing stale partial cache file %s", stale)
            try:
                os.remove(stale)
            except FileNotFoundError:
                pass
    owner.write_text(f"{os.getpid()}\n")
    return prefix


def _check_memory_cache(n: int, target_hw) -> None:
    need = n * target_hw[0] * target_hw[1] * 3  # uint8 cache
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration, ValueError):
        return
    if need > 0.6 * avail:
        raise ResourceError(
            f"caching {n} images of {target_hw[0]}x{target_hw[1]} in memory needs ~{need / 2**30:.1f} GB "
            f"but only {avail / 2**30:.1f} GB is available",
            "pass a directory to cache on disk (--cache DIR) or no cache")


def _image_stream(paths, target_hw, resize, hair_removal, cache):
    """Dataset of images for ``paths`` in order, cached as asked: uint8 when cached, float32 (the
    same values, no uint8 round trip) when not."""
    if cache == "memory":
        _check_memory_cache(len(paths), target_hw)
        return _loaded_in_order(paths, target_hw, resize, hair_removal, "uint8").cache()
    if cache:
        prefix = prepare_file_cache(cache, cache_key(paths, target_hw, resize, hair_removal))
        if prefix is not None:
            if os.path.exists(prefix + ".index"):  # complete: nothing is decoded, no plans needed
                ds = _path_stream(paths).map(image_loader(target_hw, resize, hair_removal))
            else:
                ds = _loaded_in_order(paths, target_hw, resize, hair_removal, "uint8")
            return ds.cache(prefix)
    return _loaded_in_order(paths, target_hw, resize, hair_removal, "float32")


# --- public ---------------------------------------------------------------------------------------

def make_dataset(paths, labels, num_classes: int, img_size, batch_size: int, training: bool,
                 augment="light", seed: int = 0, cache=None, sample_weights=None,
                 resize: str = "crop", hair_removal: bool = False, oversample: bool = False,
                 drop_remainder: bool | None = None, metadata=None, mix=None):
    """A batched ``tf.data.Dataset`` of ``(images, targets[, weights])`` (see docs/CONTRACTS.md).

    - ``labels``: int class indices, or None for images only (prediction).
    - ``training``: shuffle (seeded, new order each epoch), augment, drop the last partial batch
      (every new batch shape costs a graph rebuild). Otherwise: file order, every sample, no
      augmentation whatever ``augment`` says.
    - ``augment``: preset name (``none|light|heavy``, optionally ``'light,rotate=15'``) or an
      :class:`~skinzoo.data.augment.Augment`.
    - ``cache``: None, ``"memory"`` or a directory for a tf.data file cache (for sets larger than
      memory); decoded + resized images are cached, augmentation happens after the cache.
    - ``sample_weights``: per-sample float weights (e.g. ``balance.sample_weights_for``).
    - ``oversample`` (training only): draw classes equally from per-class streams; the dataset is
      then infinite — pass ``steps_per_epoch=balance.oversample_steps(len(labels), batch_size)``
      to ``fit`` (nothing is attached to the dataset object).
    - ``mix``: a :class:`~skinzoo.data.mixing.Mix` (mixup / CutMix, training only); elements are
      then always ``(images, targets, weights)``, the weights carrying the mixed class weights.
    - ``metadata``: encoded patient metadata ``(N, width)`` (skinzoo.data.metadata); the inputs
      are then ``{"image": images, "metadata": vectors}``. Without it nothing changes.
    """
    runtime.tf()  # TensorFlow's start-up (quiet logs) before the first dataset op
    target_hw = image_hw(img_size)
    paths = _check_paths(paths)
    n = len(paths)
    if n == 0:
        raise DataError("no images to make a dataset from", "check the dataset and the split")
    if batch_size < 1:
        raise UsageError(f"batch size {batch_size} must be at least 1")
    drop_remainder = training if drop_remainder is None else drop_remainder
    if drop_remainder and n < batch_size:
        raise UsageError(f"the training set has {n} images, fewer than one batch of {batch_size}",
                         f"use --batch-size {max(1, n // 2)} or fewer")
    extras = []
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) != n:
            raise UsageError(f"{n} paths but {len(labels)} labels")
        extras.append(encode_targets(labels, num_classes))
    elif training or oversample:
        raise UsageError("a training dataset needs labels")
    if sample_weights is not None:
        sample_weights = np.asarray(sample_weights, dtype=np.float32)
        if sample_weights.shape != (n,):
            raise UsageError(f"sample_weights has shape {sample_weights.shape}, expected ({n},)")
        if labels is None:
            raise UsageError("sample weights need labels")
        extras.append(sample_weights)
    if metadata is not None:
        extras.insert(0, _checked_metadata(metadata, n))
    aug = resolve_augment(augment) if training else resolve_augment(None)
    if oversample and not training:
        raise UsageError("oversampling applies to the training set only")

    if oversample:
        ds = _oversampled(paths, labels, extras, target_hw, resize, hair_removal, cache, seed,
                          batch_size)
    else:
        ds = _ordered_or_shuffled(paths, extras, target_hw, resize, hair_removal, cache, seed,
                                  training)

    if mix is not None and mix.active and not (training and labels is not None):
        raise UsageError("mixup / CutMix apply to a labelled training set only")
    ds = _augment_cast_batch(ds, aug, seed, batch_size, drop_remainder, has_extras=bool(extras),
                             with_metadata=metadata is not None)
    if mix is not None and mix.active:
        ds = _mixed(ds, mix, seed)
    return ds


def _mixed(ds, mix, seed: int):
    """Mixup / CutMix on whole batches, with per-batch stateless seeds (new every epoch)."""
    tf = runtime.tf()
    seeds = tf.data.Dataset.random(seed=seed + 7919, rerandomize_each_iteration=True).batch(2)

    def mixed(element, s):
        x, targets, *weights = element
        return mix_batch(x, targets, weights[0] if weights else None, s, mix)

    return tf.data.Dataset.zip((ds, seeds)).map(mixed, num_parallel_calls=tf.data.AUTOTUNE) \
        .prefetch(tf.data.AUTOTUNE)


def _checked_metadata(metadata, n: int) -> np.ndarray:
    metadata = np.asarray(metadata, dtype=np.float32)
    if metadata.ndim != 2 or len(metadata) != n:
        raise UsageError(f"metadata has shape {metadata.shape}, expected ({n}, width)")
    return metadata


def _augment_cast_batch(ds, aug, seed: int, batch_size: int, drop_remainder: bool, has_extras: bool,
                        with_metadata: bool = False):
    """The tail shared by every dataset: [augment] → float32 → batch → prefetch."""
    tf = runtime.tf()
    if aug.active:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))

        def augmented(element, s):
            image, *rest = element
            image = augment_image(tf.cast(image, tf.float32), s, aug)
            return (image, *rest)

        ds = ds.map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)

    # One cast per batch, not per image: per-element map stages cost more than the cast itself.
    # A 1-tuple is unwrapped here too, or Keras would see (x,) instead of x.
    def to_float(image, *rest):
        image = tf.cast(image, tf.float32)
        if with_metadata:  # the first extra is the metadata: inputs by the model's input names
            image, rest = {"image": image, "metadata": rest[0]}, rest[1:]
        return (image, *rest) if rest else image

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def make_array_dataset(images, labels, num_classes, batch_size: int, training: bool,
                       augment="light", seed: int = 0, sample_weights=None,
                       force_augment: bool = False):
    """Like :func:`make_dataset` for images already in memory (uint8/float (N, H, W, 3) in
    [0, 255]): SMOTE-resampled pixels, or augmented views for the embedding cache
    (``force_augment`` augments without shuffling, so outputs stay aligned with inputs)."""
    tf = runtime.tf()
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise UsageError(f"images must be (N, H, W, 3), got {images.shape}")
    extras = []
    if labels is not None:
        extras.append(encode_targets(np.asarray(labels), num_classes))
    if sample_weights is not None:
        extras.append(np.asarray(sample_weights, np.float32))
    ds = tf.data.Dataset.from_tensor_slices((images, *extras))
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    aug = resolve_augment(augment) if (training or force_augment) else resolve_augment(None)
    drop_remainder = training and len(images) >= batch_size
    return _augment_cast_batch(ds, aug, seed, batch_size, drop_remainder, has_extras=bool(extras))


def _with_extras(images, extras):
    """Elements ``(image, *extras)`` from an image dataset and per-sample arrays."""
    tf = runtime.tf()
    if not extras:
        return images.map(lambda image: (image,))
    meta = tf.data.Dataset.from_tensor_slices(tuple(extras))
    return tf.data.Dataset.zip((images, meta)).map(lambda image, m: (image, *m))


def _shuffle_buffer(n: int, target_hw, cache, share: int = 1) -> int:
    if cache == "memory":
        return n  # the cache holds every image anyway; the buffer only references them
    per_image = target_hw[0] * target_hw[1] * 3
    return max(16, min(n, SHUFFLE_BUFFER_BYTES // per_image // share))


def _ordered_or_shuffled(paths, extras, target_hw, resize, hair_removal, cache, seed, training):
    tf = runtime.tf()
    n = len(paths)
    if cache:
        images = _image_stream(paths, target_hw, resize, hair_removal, cache)
        ds = _with_extras(images, extras)
        if training:
            ds = ds.shuffle(_shuffle_buffer(n, target_hw, cache), seed=seed,
                            reshuffle_each_iteration=True)
        return ds
    # Uncached: shuffle the (cheap) paths before decoding, so the shuffle is global and bounded.
    ds = _with_extras(_path_stream(paths), extras)
    if training:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    load = image_loader(target_hw, resize, hair_removal, shared_plan(paths, target_hw), "float32")
    return ds.map(lambda p, *m: (load(p), *m), num_parallel_calls=tf.data.AUTOTUNE)


def _path_stream(paths):
    return runtime.tf().data.Dataset.from_tensor_slices(np.asarray(paths, dtype=object).astype(str))


def _oversampled(paths, labels, extras, target_hw, resize, hair_removal, cache, seed, batch_size):
    """Infinite stream drawing each present class with equal probability from its own stream."""
    tf = runtime.tf()
    classes = np.unique(labels)
    streams = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        class_paths = [paths[i] for i in idx]
        class_extras = [e[idx] for e in extras]
        if cache:
            images = _image_stream(class_paths, target_hw, resize, hair_removal, cache)
            buffer = _shuffle_buffer(len(idx), target_hw, cache, share=len(classes))
        else:  # decode after sampling, so nothing is decoded that is not used
            images, buffer = _path_stream(class_paths), len(idx)
        s = _with_extras(images, class_extras)
        streams.append(s.shuffle(buffer, seed=seed + int(c), reshuffle_each_iteration=True).repeat())
    ds = tf.data.Dataset.sample_from_datasets(streams, seed=seed)
    if not cache:
        load = image_loader(target_hw, resize, hair_removal, shared_plan(paths, target_hw), "float32")
        ds = ds.map(lambda p, *m: (load(p), *m), num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def load_images(paths, img_size, resize: str = "crop", hair_removal: bool = False,
                batch_size: int = 32) -> np.ndarray:
    """float32 (N, H, W, 3) in [0, 255]: the exact decode + resize of ``make_dataset``, no
    augmentation. For predict and Grad-CAM; a file that does not decode is named in a DataError."""
    tf = runtime.tf()
    target_hw = image_hw(img_size)
    paths = _check_paths(paths)
    if not paths:
        return np.zeros((0, *target_hw, 3), np.float32)
    ds = _image_stream(paths, target_hw, resize, hair_removal, cache=None)
    ds = ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    out = np.empty((len(paths), *target_hw, 3), np.float32)
    done = 0
    try:
        for batch in ds:
            out[done:done + len(batch)] = batch.numpy()
            done += len(batch)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
        bad = _first_undecodable(paths[done:done + batch_size], target_hw, resize)
        raise DataError(f"cannot decode image {bad or 'in ' + ', '.join(paths[done:done + 3])}",
                        "the file is corrupt or not a JPEG/PNG/BMP/GIF; replace or remove it") from None
    return out


def _first_undecodable(paths, target_hw, resize) -> str | None:
    tf = runtime.tf()
    load = image_loader(target_hw, resize, False)
    for p in paths:
        try:
            load(tf.constant(p))
        except (tf.errors.InvalidArgumentError, tf.errors.UnknownError):
            return p
    return None


def make_image_dataset(paths, img_size, batch_size: int, resize: str = "crop",
                       hair_removal: bool = False, augment=None, seed: int = 0):
    """Batches of float32 images for ``paths`` in file order, every image, no labels: for
    inference passes (two-stage embeddings) that must stay aligned with ``paths``.

    Decoding runs on tf.data's parallel threads and is prefetched, so it overlaps the model's
    work on the previous batch. ``augment`` (a preset or Augment; None for none) augments every
    image with a seeded stateless random stream indexed by position, as ``make_array_dataset``'s
    ``force_augment`` does: the same seed gives the same views. Missing or empty files are a
    DataError up front; a file that fails to decode fails the iteration with TensorFlow's error
    (:func:`undecodable_error` names it)."""
    runtime.tf()
    target_hw = image_hw(img_size)
    paths = _check_paths(paths)
    if not paths:
        raise DataError("no images to make a dataset from", "check the dataset and the split")
    if batch_size < 1:
        raise UsageError(f"batch size {batch_size} must be at least 1")
    images = _with_extras(_image_stream(paths, target_hw, resize, hair_removal, cache=None), [])
    return _augment_cast_batch(images, resolve_augment(augment), seed, batch_size,
                               drop_remainder=False, has_extras=False)


def undecodable_error(paths, img_size, resize: str = "crop") -> DataError:
    """The DataError for a decode failure somewhere in ``paths`` (a batch's worth): names the
    first file that does not decode, as :func:`load_images` does."""
    bad = _first_undecodable(list(paths), image_hw(img_size), resize)
    return DataError(f"cannot decode image {bad or 'in ' + ', '.join(list(paths)[:3])}",
                     "the file is corrupt or not a JPEG/PNG/BMP/GIF; replace or remove it")
