"""Two-stage head training vs the same head trained end to end over the same frozen backbone.

Both paths train the same head (same initial weights, optimiser, loss, class weights, batch size,
10 epochs, validation after each epoch) on the same frozen transfer backbone:

- baseline, end to end (the notebooks' way): ``model.fit`` on the full model with the backbone
  frozen, so every epoch pushes every training and validation image through the backbone again.
  Decoded images are cached in memory after the first epoch, so the difference measured is the
  backbone recomputation, not JPEG decoding.
- two-stage (``skinzoo.train.two_stage``): compute each image's pooled embedding once
  (``compute_embeddings``: one tf.data stream decoding ahead of one folded inference function),
  then ``fit`` the head alone on the embeddings.

Wall times include everything a user waits for (decoding, graph tracing, the embedding pass).
The first run's time is broken down (``seconds_two_stage_*``: weights hash + trace, embedding
pass, head epochs), with CPU seconds beside wall seconds (the machine is shared). The former
embedding pass (``load_images`` 512 images at a time, then ``model.predict``) is timed on the
same images in the same run, so the lever is measured side by side; and decoding alone, for
reference (it overlaps the backbone in the embedding pass).
The validation balanced accuracy of both is reported with a paired-bootstrap 95% interval of
their difference. Frozen BatchNorm runs in inference mode and no augmentation is used, so the
features differ only by dropout: the head's own, and for EfficientNet also the stochastic-depth
dropout inside the backbone's blocks, which Keras keeps active in training mode even when the
layers are frozen (the end-to-end head trains on slightly noisier features).
``assembled_max_abs_diff`` checks that the trained head copied into the full model
(``copy_head_weights``) predicts what the head predicted.

Offline the backbone has random weights (``weights=None``); pass ``--weights PATH`` (a local
ImageNet weights file) for meaningful accuracies. Speed does not depend on the weights.
"""

from __future__ import annotations

import resource
import time

from bench.rounds import alternating_calls, ratio_summary

EPOCHS = 10
BATCH = 32
LR = 1e-3
CALIBRATION_IMAGES = 64  # one training-mode batch; its activations dominate peak memory


def _subset(data: str, n: int, val: float, seed: int = 0):
    """n images drawn stratified by label, split train/val by lesion group."""
    from skinzoo.data.sources import load_dataset
    from skinzoo.data.splits import make_split
    from skinzoo.errors import UsageError

    if not data:
        raise UsageError("the two-stage benchmark needs real images",
                         "pass --data PATH (a HAM10000 folder)")
    dataset = load_dataset(data)
    table = dataset.table
    if n < len(table):
        table = table.groupby("label", group_keys=False).sample(
            frac=n / len(table), random_state=seed)
    table = table.reset_index(drop=True)
    split = make_split(table, val=val, test=0.0, seed=seed)
    classes = list(dataset.classes)

    def side(name):
        rows = table[split == name]
        return rows["path"].tolist(), rows["label"].map(classes.index).to_numpy()

    return classes, side("train"), side("val")


def _cpu_seconds() -> float:
    """CPU seconds of this process, all threads (tf.data's decoders included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Clock:
    """Wall and CPU seconds of a ``with`` block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), _cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, _cpu_seconds() - self.cpu


def _embed_chunked_predict(extractor, paths, size):
    """The former embedding pass (before issue 17), kept here as the lever's baseline: decode
    512 images, then ``predict`` them padded to whole batches; decoding and the backbone take
    turns."""
    import numpy as np

    from skinzoo.data.pipeline import load_images

    chunks = []
    for start in range(0, len(paths), 512):
        images = load_images(paths[start:start + 512], size)
        n = len(images)
        pad = -n % BATCH
        if pad:
            images = np.concatenate([images, np.repeat(images[-1:], pad, axis=0)])
        chunks.append(extractor.predict(images, batch_size=BATCH, verbose=0)[:n])
    return np.concatenate(chunks).astype(np.float32)


class _EpochTimer:
    """Seconds per epoch (Keras callback built lazily so importing this file needs no TF)."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.seconds = []

            def on_epoch_begin(self, epoch, logs=None):
                self._t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                self.seconds.append(time.perf_counter() - self._t)

        return Timer()


def _compile(model, k, steps_per_execution=1):
    import keras

    from skinzoo.train.parts import make_loss

    model.compile(optimizer=keras.optimizers.Adam(LR), loss=make_loss(k), metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)


def _balanced_accuracy(labels, outputs, classes) -> float:
    from skinzoo.metrics import as_class_probs, classification_metrics

    return float(classification_metrics(labels, as_class_probs(outputs), classes)["balanced_accuracy"])


def _difference_interval(labels, outputs_a, outputs_b, n_boot=1000, seed=0) -> tuple[float, float]:
    """95% paired-bootstrap interval of balanced accuracy(a) - balanced accuracy(b) over the
    validation images: if it contains 0, the two paths agree within noise."""
    import numpy as np
    from sklearn.metrics import balanced_accuracy_score

    from skinzoo.metrics import as_class_probs

    pred_a = as_class_probs(outputs_a).argmax(1)
    pred_b = as_class_probs(outputs_b).argmax(1)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        diffs.append(balanced_accuracy_score(labels[idx], pred_a[idx])
                     - balanced_accuracy_score(labels[idx], pred_b[idx]))
    low, high = np.percentile(diffs, [2.5, 97.5])
    return round(float(low), 3), round(float(high), 3)


def _calibrate_batchnorm(model, images):
    """Random init only: set every BatchNormalization's moving statistics to those of one batch.

    A freshly initialised EfficientNet/ResNet keeps moving mean 0 and variance 1 while its real
    activations are orders of magnitude smaller, so its inference-mode embeddings are nearly
    constant (std ~1e-6) and any head collapses to one class, which would make the accuracy
    comparison meaningless. One training-mode forward pass with momentum 0 gives well-scaled
    random features (a data-dependent init); both paths then share that same frozen backbone.
    """
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    extractor = keras.Model(model.inputs, model.get_layer("embedding").output)
    extractor([images], training=True)
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def _fit_head(head, initial, x_train, y_train, weights, x_val, y_val, k):
    from skinzoo.train.two_stage import HEAD_STEPS_PER_EXECUTION

    head.set_weights(initial)
    _compile(head, k, HEAD_STEPS_PER_EXECUTION)  # as skinzoo.train.two_stage.train_head does
    timer = _EpochTimer()
    head.fit(x_train, y_train, sample_weight=weights, validation_data=(x_val, y_val), epochs=EPOCHS,
             batch_size=BATCH, shuffle=True, verbose=0, callbacks=[timer])
    return timer


def run(quick: bool = False, data: str | None = None, model: str = "efficientnetb0",
        weights: str | None = None) -> dict:
    import tempfile

    from skinzoo.runtime import tf

    tf()
    import keras
    import numpy as np

    from skinzoo.data.balance import sample_weights_for
    from skinzoo.data.pipeline import encode_targets, load_images, make_dataset
    from skinzoo.models import build_model
    from skinzoo.models.transfer import (
        copy_head_weights,
        feature_extractor,
        freeze_backbone,
        head_model,
    )
    from skinzoo.train.two_stage import HEAD_STEPS_PER_EXECUTION, Embedder, compute_embeddings

    size, n = (96, 1000) if quick else (128, 3000)
    classes, (train_paths, train_labels), (val_paths, val_labels) = _subset(data, n, val=0.2)
    k = len(classes)
    train_weights = sample_weights_for(train_labels, k)
    y_train, y_val = encode_targets(train_labels, k), encode_targets(val_labels, k)

    keras.utils.set_random_seed(0)
    full = build_model(model, k, input_shape=(size, size, 3), weights=weights)
    if weights is None:
        _calibrate_batchnorm(full, load_images(train_paths[:CALIBRATION_IMAGES], size))
    freeze_backbone(full)
    extractor = feature_extractor(full)
    head = head_model(extractor.output.shape[-1], k)
    initial = head.get_weights()
    copy_head_weights(head, full)  # both paths start from the same head weights

    def first_run(cache_dir):
        """Two-stage from nothing: hash + trace, embed train and val (filling the cache), then
        train the head. Returns the clocks, the embeddings and the head's validation outputs."""
        keras.utils.set_random_seed(1)
        embed = dict(img_size=size, batch_size=BATCH, cache_dir=cache_dir, model_name=model)
        with _Clock() as cold:
            with _Clock() as prepare:  # weights hash (cache key) + the one trace
                embedder = Embedder(extractor, size)
                assert embedder.fingerprint
                embedder.prepare()
            with _Clock() as embedding:
                x_train = compute_embeddings(embedder, train_paths, **embed)
                x_val = compute_embeddings(embedder, val_paths, **embed)
            with _Clock() as head_fit:
                head_timer = _fit_head(head, initial, x_train, y_train, train_weights, x_val,
                                       y_val, k)
        return {"cold": cold, "prepare": prepare, "embedding": embedding, "head_fit": head_fit,
                "head_timer": head_timer, "x": (x_train, x_val),
                "outputs": head.predict(x_val, batch_size=256, verbose=0),
                "trained_head": head.get_weights()}

    def end_to_end():
        """The same head, from the same initial weights, trained over the frozen backbone."""
        keras.utils.set_random_seed(1)
        head.set_weights(initial)
        copy_head_weights(head, full)
        with _Clock() as clock:
            train_ds = make_dataset(train_paths, train_labels, k, size, BATCH, training=True,
                                    augment="none", cache="memory", sample_weights=train_weights,
                                    seed=0)
            val_ds = make_dataset(val_paths, val_labels, k, size, BATCH, training=False,
                                  cache="memory")
            _compile(full, k)
            timer = _EpochTimer()
            full.fit(train_ds, validation_data=val_ds, epochs=EPOCHS, verbose=0, callbacks=[timer],
                     shuffle=False)  # the dataset shuffles itself
        return {"clock": clock, "timer": timer, "outputs": full.predict(val_ds, verbose=0)}

    # Alternating rounds (bench/rounds.py): each round runs both sides, the order flipping, each
    # two-stage run with an empty cache of its own, so every one is a first run. Round 1 runs in
    # a fresh process like a user's first run; later rounds find TensorFlow's kernels warm, which
    # helps both sides alike.
    rounds = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="skinzoo-bench-embeddings-") as cache_root:
        runs = alternating_calls({"two_stage": lambda r: first_run(f"{cache_root}/round{r}"),
                                  "end_to_end": lambda r: end_to_end()}, rounds)
        firsts, ends = runs["two_stage"], runs["end_to_end"]
        # --- two-stage again (another lr, dropout, balance...): embeddings come from the cache ---
        keras.utils.set_random_seed(1)
        embed = dict(img_size=size, batch_size=BATCH, cache_dir=f"{cache_root}/round0",
                     model_name=model)
        t0 = time.perf_counter()
        embedder = Embedder(extractor, size)  # a new run: hashes the weights again
        x_train = compute_embeddings(embedder, train_paths, **embed)
        x_val = compute_embeddings(embedder, val_paths, **embed)
        _fit_head(head, initial, x_train, y_train, train_weights, x_val, y_val, k)
        warm = time.perf_counter() - t0

    # --- the lever side by side: the former embedding pass, and decoding alone ---
    with _Clock() as former:
        x_former = _embed_chunked_predict(extractor, train_paths + val_paths, size)
    former_diff = float(np.max(np.abs(x_former - np.concatenate([x_train, x_val])))
                        / np.max(np.abs(x_former)))
    del x_former
    with _Clock() as decode:
        load_images(train_paths + val_paths, size)

    first, e2e = firsts[0], ends[0]  # accuracy and the head check: round 1 (same seeds each round)
    head_outputs, e2e_outputs = first["outputs"], e2e["outputs"]
    bacc_two_stage = _balanced_accuracy(val_labels, head_outputs, classes)
    bacc_end_to_end = _balanced_accuracy(val_labels, e2e_outputs, classes)
    low, high = _difference_interval(val_labels, head_outputs, e2e_outputs)

    # The trained head, copied into the full model, must predict what it predicted alone.
    head.set_weights(first["trained_head"])
    copy_head_weights(head, full)
    probe = load_images(val_paths[:BATCH], size)
    assembled_diff = float(np.max(np.abs(full.predict(probe, verbose=0) - head_outputs[:BATCH])))

    def median(values):
        return float(np.median(list(values)))

    end_to_end_s = median(e["clock"].wall for e in ends)
    cpu_end_to_end = median(e["clock"].cpu for e in ends)
    speedup = ratio_summary([e["clock"].wall for e in ends], [f["cold"].wall for f in firsts])
    cpu_speedup = ratio_summary([e["clock"].cpu for e in ends], [f["cold"].cpu for f in firsts])
    backbone = weights or (f"random init, BatchNorm statistics calibrated on {CALIBRATION_IMAGES} "
                           "training images")
    e2e_epoch = median(t for e in ends for t in e["timer"].seconds)
    head_epoch = median(t for f in firsts for t in f["head_timer"].seconds)
    return {
        "name": "two_stage",
        "baseline": f"head trained end to end over the frozen backbone, {EPOCHS} epochs",
        "figures": {
            "model": model, "weights": weights or "random, BN-calibrated", "image_size": size,
            "train_images": len(train_paths), "val_images": len(val_paths), "epochs": EPOCHS,
            "rounds": rounds,
            "seconds_end_to_end": round(end_to_end_s, 1),
            "cpu_seconds_end_to_end": round(cpu_end_to_end, 1),
            "seconds_two_stage": round(median(f["cold"].wall for f in firsts), 1),
            "cpu_seconds_two_stage": round(median(f["cold"].cpu for f in firsts), 1),
            "seconds_end_to_end_per_round": [round(e["clock"].wall, 1) for e in ends],
            "seconds_two_stage_per_round": [round(f["cold"].wall, 1) for f in firsts],
            "cpu_seconds_end_to_end_per_round": [round(e["clock"].cpu, 1) for e in ends],
            "cpu_seconds_two_stage_per_round": [round(f["cold"].cpu, 1) for f in firsts],
            "seconds_two_stage_hash_and_trace": round(median(f["prepare"].wall for f in firsts), 2),
            "seconds_two_stage_embedding_pass": round(median(f["embedding"].wall for f in firsts), 1),
            "cpu_seconds_two_stage_embedding_pass": round(median(f["embedding"].cpu for f in firsts), 1),
            "seconds_two_stage_head_epochs": round(median(f["head_fit"].wall for f in firsts), 2),
            "cpu_seconds_two_stage_head_epochs": round(median(f["head_fit"].cpu for f in firsts), 2),
            "seconds_two_stage_head_first_epoch": round(
                median(f["head_timer"].seconds[0] for f in firsts), 2),
            "seconds_two_stage_cached_embeddings": round(warm, 2),
            "seconds_embedding_pass_former": round(former.wall, 1),
            "cpu_seconds_embedding_pass_former": round(former.cpu, 1),
            "embedding_former_max_rel_diff": float(f"{former_diff:.1e}"),
            "seconds_decode_alone": round(decode.wall, 1),
            "cpu_seconds_decode_alone": round(decode.cpu, 1),
            "seconds_per_epoch_end_to_end": round(e2e_epoch, 2),
            "seconds_per_epoch_head": round(head_epoch, 3),
            "val_balanced_accuracy_end_to_end": round(bacc_end_to_end, 4),
            "val_balanced_accuracy_two_stage": round(bacc_two_stage, 4),
            "val_balanced_accuracy_difference": round(bacc_two_stage - bacc_end_to_end, 4),
            "val_balanced_accuracy_difference_ci95": f"[{low:+.3f}, {high:+.3f}]",
            "val_balanced_accuracy_equal_within_noise": "yes" if low <= 0 <= high else "no",
            "assembled_max_abs_diff": float(f"{assembled_diff:.2e}"),
        },
        "ratios": {
            "speedup_two_stage_vs_end_to_end": speedup[0],
            "cpu_speedup_two_stage_vs_end_to_end": cpu_speedup[0],
            "speedup_embedding_pass_vs_former": round(former.wall / firsts[-1]["embedding"].wall, 2),
            "cpu_speedup_embedding_pass_vs_former": round(former.cpu / firsts[-1]["embedding"].cpu, 2),
            "speedup_cached_embeddings_vs_end_to_end": round(end_to_end_s / warm, 1),
            "speedup_per_epoch": round(e2e_epoch / head_epoch, 1),
        },
        "ratio_ranges": {"speedup_two_stage_vs_end_to_end": speedup[1],
                         "cpu_speedup_two_stage_vs_end_to_end": cpu_speedup[1]},
        "targets": {"speedup_two_stage_vs_end_to_end": ">= 10",
                    "cpu_speedup_two_stage_vs_end_to_end": ">= 10",
                    "speedup_cached_embeddings_vs_end_to_end": ">= 10"},
        "notes": f"{model} backbone ({backbone}) frozen; head dense 256/128 dropout 0.5, Adam {LR:g}, batch "
                 f"{BATCH}, class weights, no augmentation, {EPOCHS} epochs with validation; the head "
                 f"alone runs {HEAD_STEPS_PER_EXECUTION} steps per call (as skinzoo does), the "
                 "end-to-end model 1 (its steps are backbone-bound); "
                 f"{len(train_paths)}+{len(val_paths)} HAM10000 images at {size} px; end to end "
                 "caches decoded images in memory; wall times include decoding and graph tracing; "
                 "'cached embeddings' = a second head run reusing the on-disk embedding cache; "
                 "'former' = the embedding pass before issue 17 (load_images by 512 + predict), "
                 "same images, timed after (vs the last round's pass); cpu_* = process CPU "
                 f"seconds, all threads; speed-ups: median of {rounds} alternating rounds of "
                 "per-round ratios (ratio_ranges: min-max), each two-stage run a first run with "
                 "an empty embedding cache; accuracies from round 1",
    }


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", default=None, help="HAM10000 folder")
    parser.add_argument("--model", default="efficientnetb0", help="a transfer model of the zoo")
    parser.add_argument("--weights", default=None, help="local ImageNet weights file (or imagenet)")
    args = parser.parse_args()
    print(json.dumps(run(args.quick, args.data, args.model, args.weights), indent=2))
