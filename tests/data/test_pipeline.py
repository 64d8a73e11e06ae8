"""tf.data pipeline: shapes, value ranges, resize modes, augmentation only in training,
determinism, caching (epoch 2 decodes nothing; stale caches not reused), oversampling."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest

from skinzoo.errors import DataError, UsageError


def _table(root):
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    paths = [str(root / "images" / f"{i}.jpg") for i in meta["image_id"]]
    classes = sorted(meta["dx"].unique())
    labels = np.array([classes.index(d) for d in meta["dx"]])
    return paths, labels, classes


@pytest.fixture(scope="module")
def data(synth_dir):
    return _table(synth_dir)


def _write(path, img):
    import cv2

    assert cv2.imwrite(str(path), np.ascontiguousarray(img[..., ::-1]))
    return str(path)


def _all(ds):
    return [np.concatenate([b[i].numpy() for b in ds]) for i in range(len(ds.element_spec))]


def test_batches_have_contract_shapes_dtypes_and_raw_range(data):
    from skinzoo.data.pipeline import make_dataset

    paths, labels, classes = data
    ds = make_dataset(paths, labels, len(classes), 24, 16, training=True, augment="heavy", seed=0)
    x, y = next(iter(ds))
    assert x.shape == (16, 24, 24, 3) and x.dtype.name == "float32"
    assert y.shape == (16, 7) and np.allclose(y.numpy().sum(1), 1)
    xs = x.numpy()
    assert xs.min() >= 0 and xs.max() <= 255 and xs.max() > 100  # raw [0, 255], not [0, 1]
    assert sum(1 for _ in ds) == len(paths) // 16  # drop_remainder for training

    binary = (labels == classes.index("mel")).astype(int)
    w = np.linspace(0.5, 2, len(paths)).astype(np.float32)
    ev = make_dataset(paths, binary, 2, 24, 16, training=False, sample_weights=w)
    xs, ys, ws = _all(ev)
    assert xs.shape == (len(paths), 24, 24, 3)  # eval keeps every sample, in order
    assert ys.shape == (len(paths), 1) and np.array_equal(ys[:, 0], binary)
    assert np.allclose(ws, w)


def test_resize_modes_keep_aspect_or_squash(tmp_path):
    from skinzoo.data.pipeline import load_images

    # 40 wide x 20 high: white left half, red right half, on a png (non-JPEG path).
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255
    img[:, 20:] = (255, 0, 0)
    p = _write(tmp_path / "two.png", img)
    crop, pad, squash = (load_images([p], 16, mode)[0] for mode in ("crop", "pad", "squash"))
    # crop: the centre 20x20 of the original scaled to 16: left half white, right half red
    assert np.allclose(crop[:, 1], 255, atol=2) and np.allclose(crop[:, -2], (255, 0, 0), atol=2)
    # pad: 16x8 content centred, black bars top and bottom
    assert np.allclose(pad[:3], 0) and np.allclose(pad[-3:], 0)
    assert np.allclose(pad[8, 1], 255, atol=2)
    # squash: the whole image, no bars
    assert np.allclose(squash[0, 1], 255, atol=2) and np.allclose(squash[-1, -2], (255, 0, 0), atol=2)
    rect = load_images([p], (12, 20), "crop")
    assert rect.shape == (1, 12, 20, 3)


def test_large_jpeg_decoded_at_reduced_ratio_matches_full_decode(tmp_path):
    from skinzoo.data.pipeline import load_images

    yy, xx = np.mgrid[0:256, 0:320]
    img = np.stack([xx * 255 // 320, yy * 255 // 256, np.full_like(xx, 90)], -1).astype(np.uint8)
    jpg, png = _write(tmp_path / "big.jpg", img), _write(tmp_path / "big.png", img)
    a, b = load_images([jpg, png], 32, "crop")  # jpeg: ratio 8 decode; png: full decode
    assert np.abs(a - b).mean() < 4


def test_validation_never_augmented_training_is(data):
    from skinzoo.data.pipeline import make_dataset

    paths, labels, classes = data
    paths, labels = paths[:32], labels[:32]
    val = make_dataset(paths, labels, 7, 24, 8, training=False, augment="heavy", seed=3)
    first, second = _all(val)[0], _all(val)[0]
    assert np.array_equal(first, second)
    train = make_dataset(paths, labels, 7, 24, 8, training=True, augment="heavy", seed=3)
    seen = {}
    plain = {tuple(p.ravel()[:48]): i for i, p in enumerate(first)}
    for x, _ in train:
        for img in x.numpy():
            seen[tuple(img.ravel()[:48])] = True
    assert len(set(seen) & set(plain)) < 4  # augmented images differ from the plain ones


def test_same_seed_same_first_batch_and_new_variants_each_epoch(data):
    from skinzoo.data.pipeline import make_dataset

    paths, labels, _ = data

    def first(seed, ds=None):
        ds = ds or make_dataset(paths, labels, 7, 24, 8, training=True, augment="light", seed=seed)
        return next(iter(ds))[0].numpy()

    assert np.array_equal(first(5), first(5))
    assert not np.array_equal(first(5), first(6))
    ds = make_dataset(paths, labels, 7, 24, 8, training=True, augment="light", seed=5)
    assert not np.array_equal(first(0, ds), first(0, ds))  # epoch 2 reshuffles/re-augments


def test_file_cache_avoids_decoding_in_epoch_two(synth_copy, tmp_path):
    from skinzoo.data.pipeline import make_dataset

    paths, labels, _ = _table(synth_copy)
    paths, labels = paths[:40], labels[:40]
    cache = tmp_path / "cache"
    ds = make_dataset(paths, labels, 7, 24, 8, training=True, augment="none", cache=str(cache))
    epoch1 = sorted(map(bytes, _all(ds)[0]))
    assert any(f.endswith(".index") for f in os.listdir(cache))
    shutil.rmtree(synth_copy / "images")  # epoch 2 must not need the files
    epoch2 = sorted(map(bytes, _all(ds)[0]))
    assert epoch1 == epoch2


def test_memory_cache_avoids_decoding_in_epoch_two(synth_copy):
    from skinzoo.data.pipeline import make_dataset

    paths, labels, _ = _table(synth_copy)
    paths, labels = paths[:24], labels[:24]
    ds = make_dataset(paths, labels, 7, 24, 8, training=False, cache="memory")
    epoch1 = _all(ds)[0]
    shutil.rmtree(synth_copy / "images")
    assert np.array_equal(epoch1, _all(ds)[0])


def test_cache_not_reused_when_size_changes_and_stale_lock_removed(synth_copy, tmp_path):
    from skinzoo.data.pipeline import cache_key, make_dataset, prepare_file_cache

    paths, labels, _ = _table(synth_copy)
    paths, labels = paths[:16], labels[:16]
    cache = tmp_path / "cache"
    _all(make_dataset(paths, labels, 7, 24, 8, training=False, cache=str(cache)))
    x32 = _all(make_dataset(paths, labels, 7, 32, 8, training=False, cache=str(cache)))[0]
    assert x32.shape[1:3] == (32, 32)
    assert len([f for f in os.listdir(cache) if f.endswith(".index")]) == 2
    assert cache_key(paths, 24, "crop", True) != cache_key(paths, 24, "crop", False)
    assert cache_key(paths, 24, "crop", False) != cache_key(paths, 24, "pad", False)

    # A killed run leaves a lock + temp shard and an owner pid that no longer exists.
    key = cache_key(paths, 40, "crop", False)
    prefix = cache / f"skinzoo-{key}"
    (cache / f"skinzoo-{key}_0.lockfile").write_text("Created at: 1")
    (cache / f"skinzoo-{key}_0.data-00000-of-00001.tempstate123").write_text("")
    (cache / f"skinzoo-{key}.owner").write_text("999999999\n")
    assert prepare_file_cache(cache, key) == str(prefix)
    assert not list(cache.glob(f"skinzoo-{key}_*"))
    x40 = _all(make_dataset(paths, labels, 7, 40, 8, training=False, cache=str(cache)))[0]
    assert x40.shape == (16, 40, 40, 3)


def test_oversampling_gives_roughly_balanced_batches(data):
    from skinzoo.data.balance import oversample_steps
    from skinzoo.data.pipeline import make_dataset

    paths, labels, _ = data
    ds = make_dataset(paths, labels, 7, 16, 32, training=True, augment="none", oversample=True,
                      seed=1, cache="memory")
    # The stream never ends: the caller sizes an epoch itself; nothing is hung on the dataset.
    assert int(ds.cardinality()) == -1  # tf.data.INFINITE_CARDINALITY
    assert not hasattr(ds, "steps_per_epoch")
    assert oversample_steps(len(paths), 32) == len(paths) // 32 >= 1
    counts = np.zeros(7)
    for _, y in ds.take(20):
        counts += y.numpy().sum(0)
    share = counts / counts.sum()
    assert np.bincount(labels).max() / len(labels) > 0.5  # the data is imbalanced...
    assert share.min() > 0.09 and share.max() < 0.2  # ...the stream is not (1/7 = 0.14)


def test_user_mistakes_are_clear_errors(data, tmp_path):
    from skinzoo.data.pipeline import encode_targets, load_images, make_dataset

    paths, labels, _ = data
    with pytest.raises(DataError, match="missing"):
        make_dataset(paths[:3] + [str(tmp_path / "nope.jpg")], labels[:4], 7, 24, 2, training=False)
    with pytest.raises(UsageError, match="fewer than one batch"):
        make_dataset(paths[:3], labels[:3], 7, 24, 8, training=True)
    with pytest.raises(UsageError, match="resize"):
        load_images(paths[:1], 24, "stretch")
    with pytest.raises(DataError, match="outside"):
        encode_targets([0, 7], 7)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match="bad.jpg"):
        load_images([paths[0], str(bad)], 24)
    assert encode_targets([1, 0], 2).tolist() == [[1.0], [0.0]]
