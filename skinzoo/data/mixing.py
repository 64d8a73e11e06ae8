"""Mixup and CutMix: batch-level regularisers for small training sets (never on val/test).

Each training batch is paired with a shuffled copy of itself. Mixup blends the two images with a
weight ``lam ~ Beta(a, a)``; CutMix pastes a box covering ``1 - lam`` of the area from the partner
(``lam`` is then recomputed from the box actually pasted, which the image border may clip). With
both switched on, each batch uses one of the two, chosen at random.

Targets and per-sample (class) weights are mixed so that the weighted loss is exactly what it
would be for the two originals::

    s = lam * w_a + (1 - lam) * w_b
    t = (lam * w_a * y_a + (1 - lam) * w_b * y_b) / s

Cross-entropy is linear in the target, so ``s * CE(t, p) = lam * w_a * CE(y_a, p) + (1 - lam) *
w_b * CE(y_b, p)``: class weighting stays right for mixed samples (mixing targets and averaging
weights separately would not be). ``t`` is still a distribution, so label smoothing applies as usual.

Seeds are stateless, like :mod:`skinzoo.data.augment`: the same run seed gives the same batches.
"""

from __future__ import annotations

from dataclasses import dataclass

from skinzoo.errors import UsageError


@dataclass(frozen=True)
class Mix:
    mixup: float = 0.0  # Beta(a, a) parameter; 0 = off
    cutmix: float = 0.0

    def __post_init__(self):
        for name in ("mixup", "cutmix"):
            if not 0 <= getattr(self, name) <= 10:
                raise UsageError(f"{name} alpha {getattr(self, name)} must be in [0, 10]",
                                 "typical values: 0.2 for mixup, 1.0 for cutmix")

    @property
    def active(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


def _beta(seed, alpha: float):
    """One draw of Beta(alpha, alpha) from two stateless gamma draws."""
    from skinzoo.runtime import tf

    tf = tf()
    s = tf.random.experimental.stateless_split(seed, num=2)
    a = tf.random.stateless_gamma([], seed=s[0], alpha=alpha)
    b = tf.random.stateless_gamma([], seed=s[1], alpha=alpha)
    return a / tf.maximum(a + b, 1e-12)


def _cutmix_mask(shape, seed, lam):
    """Bool (H, W, 1) box covering ~(1 - lam) of the image at a random centre, and the kept share."""
    from skinzoo.runtime import tf

    tf = tf()
    s = tf.random.experimental.stateless_split(seed, num=2)
    h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    side = tf.sqrt(1.0 - lam)
    cy = tf.random.stateless_uniform([], seed=s[0], minval=0.0, maxval=h)
    cx = tf.random.stateless_uniform([], seed=s[1], minval=0.0, maxval=w)
    ys = tf.range(h)[:, None] + 0.5
    xs = tf.range(w)[None, :] + 0.5
    inside = (tf.abs(ys - cy) < side * h / 2.0) & (tf.abs(xs - cx) < side * w / 2.0)
    kept = 1.0 - tf.reduce_mean(tf.cast(inside, tf.float32))
    return inside[..., None], kept


def mixed_targets(targets, weights, partner, lam):
    """``(t, s)`` for samples mixed with share ``lam`` with their ``partner``: see the module
    docstring (``s * CE(t, p)`` equals the lam-mix of the two weighted losses)."""
    from skinzoo.runtime import tf

    tf = tf()
    w_a, w_b = weights, tf.gather(weights, partner)
    total = lam * w_a + (1.0 - lam) * w_b
    share_a = tf.math.divide_no_nan(lam * w_a, total)[:, None]
    return share_a * targets + (1.0 - share_a) * tf.gather(targets, partner), total


def mix_batch(x, targets, weights, seed, mix: Mix):
    """Mixed ``(x, targets, weights)`` for one batch; ``x`` is the image batch or a dict with
    ``"image"`` (other entries, e.g. metadata vectors, are blended with the same ``lam``)."""
    from skinzoo.runtime import tf

    tf = tf()
    s = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=4)
    images = x["image"] if isinstance(x, dict) else x
    n = tf.shape(images)[0]
    partner = tf.argsort(tf.random.stateless_uniform([n], seed=s[0]))
    if weights is None:
        weights = tf.ones([n], tf.float32)

    def mixup():
        lam = _beta(s[1], mix.mixup)
        return lam * images + (1.0 - lam) * tf.gather(images, partner), lam

    def cutmix():
        lam = _beta(s[2], mix.cutmix)
        inside, kept = _cutmix_mask(tf.shape(images), s[3], lam)
        return tf.where(inside[None], tf.gather(images, partner), images), kept

    if mix.mixup and mix.cutmix:
        use_cutmix = tf.random.stateless_uniform([], seed=s[3]) < 0.5
        mixed, lam = tf.cond(use_cutmix, cutmix, mixup)
    else:
        mixed, lam = cutmix() if mix.cutmix else mixup()

    targets, total = mixed_targets(targets, weights, partner, lam)
    if isinstance(x, dict):
        x = {k: (mixed if k == "image" else lam * v + (1.0 - lam) * tf.gather(v, partner))
             for k, v in x.items()}
    else:
        x = mixed
    return x, targets, total
