"""Two-stage transfer training: embeddings computed once and cached, SMOTE on embeddings only,
head copied into the full model, optional fine-tuning continuing the same history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from skinzoo.config import TrainConfig
from skinzoo.models.files import load_model_file
from skinzoo.train.fit import train

pytestmark = pytest.mark.slow


def config(synth_dir, tmp_path, **kw):
    base = dict(data=str(synth_dir), model="resnet18_small", img_size=32, batch_size=16, epochs=3,
                out=str(tmp_path / "runs"), tensorboard=False, seed=2, augment="none", dense=[32],
                cache="memory")
    base.update(kw)
    return TrainConfig(**base).validate()


def test_head_then_finetune_with_smote_on_embeddings(synth_dir, tmp_path):
    lines = []
    result = train(config(synth_dir, tmp_path, stages="both", balance="smote", finetune_epochs=1),
                   echo=lines.append)
    text = "\n".join(lines)
    assert "stage 1: embedding" in text and "smote on training embeddings" in text
    history = pd.read_csv(result.run.history)
    assert history["stage"].tolist() == ["head"] * 3 + ["finetune"]
    assert history["epoch"].tolist() == [0, 1, 2, 3]
    cache = list((tmp_path / "runs" / ".cache" / "embeddings").glob("*.npy"))
    assert len(cache) == 2  # train and val, computed once
    for f in cache:
        assert np.load(f, allow_pickle=False).shape[1] == 128  # resnet18_small's pooled width (512 x 0.25)
    model = load_model_file(result.run.best_model)
    assert model.get_layer("embedding") is not None and model.output_shape == (None, 7)


def test_head_only_reuses_cache_and_assembled_model_matches_head(synth_dir, tmp_path):
    from skinzoo.models.transfer import feature_extractor

    first = train(config(synth_dir, tmp_path, stages="head", embed_views=2, augment="light"),
                  echo=lambda *_: None)
    cache_dir = tmp_path / "runs" / ".cache" / "embeddings"
    files = {f.name: f.stat().st_mtime_ns for f in cache_dir.glob("*.npy")}
    assert len(files) == 3  # train view 0, train view 1 (augmented), val
    train(config(synth_dir, tmp_path, stages="head", embed_views=2, augment="light"),
          echo=lambda *_: None)
    assert {f.name: f.stat().st_mtime_ns for f in cache_dir.glob("*.npy")} == files  # reused
    # The assembled model is one ordinary model: backbone features + the trained head.
    model = load_model_file(first.run.best_model)
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    feats = feature_extractor(model).predict(x, verbose=0)
    head_layers = model.layers[model.layers.index(model.get_layer("embedding")) + 1:]
    y = feats
    for layer in head_layers:
        y = layer(y, training=False)
    np.testing.assert_allclose(np.asarray(y), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5)


# --- the embedding pass (compute_embeddings): one tf.data stream, one folded inference function ---

@pytest.fixture(scope="module")
def extractor_and_paths(synth_dir):
    from skinzoo.runtime import tf

    tf()
    import keras

    from skinzoo.models import build_model
    from skinzoo.models.transfer import feature_extractor

    keras.utils.set_random_seed(0)
    model = build_model("resnet18_small", 7, input_shape=(32, 32, 3))
    paths = sorted(str(p) for p in (synth_dir / "images").glob("*.jpg"))[:37]  # 37: partial batch
    return feature_extractor(model), paths


def _close(new, old):
    """Equal to 1e-5 of the embeddings' scale (float32; folding BatchNorm into the convolutions
    changes only rounding)."""
    assert new.shape == old.shape and new.dtype == np.float32
    assert np.max(np.abs(new - old)) <= 1e-5 * np.max(np.abs(old)), np.max(np.abs(new - old))


def test_embeddings_equal_keras_predict_on_decoded_images(extractor_and_paths, tmp_path):
    from skinzoo.data.pipeline import load_images
    from skinzoo.train.two_stage import Embedder, compute_embeddings

    extractor, paths = extractor_and_paths
    old = extractor.predict(load_images(paths, 32), batch_size=16, verbose=0)
    _close(compute_embeddings(extractor, paths, 32, 16), old)
    # One Embedder shared across calls and batch sizes (one trace), and through the disk cache.
    embedder = Embedder(extractor, 32)
    _close(compute_embeddings(embedder, paths, 32, 8, cache_dir=tmp_path), old)
    (cached,) = tmp_path.glob("*.npy")
    _close(np.load(cached), old)
    _close(compute_embeddings(embedder, paths[:5], 32, 16), old[:5])
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically, nothing left behind
    assert compute_embeddings(embedder, [], 32, 16).shape == (0, old.shape[1])


def test_augmented_view_is_the_seeded_view_of_the_array_pipeline(extractor_and_paths):
    from skinzoo.data.pipeline import load_images, make_array_dataset
    from skinzoo.train.two_stage import Embedder, compute_embeddings

    extractor, paths = extractor_and_paths
    embedder = Embedder(extractor, 32)
    # The former path: decoded images -> make_array_dataset(force_augment) with seed + 1000 * view.
    images = make_array_dataset(load_images(paths, 32), None, None, batch_size=16, training=False,
                                augment="heavy", seed=3 + 1000, force_augment=True)
    old = extractor.predict(images, verbose=0)
    view = compute_embeddings(embedder, paths, 32, 16, view=1, augment="heavy", seed=3)
    _close(view, old)
    plain = compute_embeddings(embedder, paths, 32, 16)
    assert np.max(np.abs(view - plain)) > 1e-3 * np.max(np.abs(plain))  # really augmented
    _close(compute_embeddings(embedder, paths, 32, 16, view=1, augment="heavy", seed=3), view)


def test_undecodable_or_missing_image_is_a_named_data_error(extractor_and_paths, tmp_path):
    from skinzoo.errors import DataError
    from skinzoo.train.two_stage import compute_embeddings

    extractor, paths = extractor_and_paths
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DataError, match="cannot decode image .*bad.jpg"):
        compute_embeddings(extractor, paths[:20] + [str(bad)] + paths[20:], 32, 8, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.npy"))  # no partial cache file
    with pytest.raises(DataError, match="missing or empty.*nope.jpg"):
        compute_embeddings(extractor, paths[:3] + [str(tmp_path / "nope.jpg")], 32, 8)
