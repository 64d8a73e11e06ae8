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
