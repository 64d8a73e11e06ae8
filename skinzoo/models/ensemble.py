"""Ensembles: several trained models as ONE Keras model that averages their probabilities.

::

    image (largest member size) ─┬─ [member1_resize] ─► member1 ─┐
                                 ├─ [member2_resize] ─► member2 ─┼─► predictions (ProbabilityMean)
    metadata ────────────────────┴──────────────────► member3 ───┘

- Each member gets the image at its own input size (a ``Resizing`` layer, area-averaged when
  shrinking) and keeps its own preprocessing (every zoo model rescales raw [0, 255] pixels itself).
- Members that use metadata share the ensemble's ``metadata`` input; members without it ignore it.
- ``predictions`` (:class:`ProbabilityMean`) applies each member's calibration temperature, then
  the weighted arithmetic or geometric mean; a 2-class ensemble outputs one sigmoid-like unit
  (probability of classes[1]) like every model in the zoo.
- Only registered layers and nested Functional models: the file loads with ``safe_mode=True``.

Weights can be given, or fitted on VALIDATION predictions (:func:`fit_weights`: the weights on the
simplex minimising the validation log loss), never on the test split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from skinzoo.errors import UsageError
from skinzoo.models.layers import keras
from skinzoo.models.registry import ENSEMBLE_MEANS as MEANS

ops = keras.ops
_EPS = 1e-7


@keras.saving.register_keras_serializable(package="skinzoo")
class ProbabilityMean(keras.layers.Layer):
    """Weighted mean of member probabilities (each ``(B, K)``, or ``(B, 1)`` sigmoid for 2
    classes), after per-member temperature scaling ``p^(1/T)`` renormalised."""

    def __init__(self, weights, mean: str = "arithmetic", temperatures=None, binary: bool = False,
                 **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        if mean not in MEANS:
            raise ValueError(f"mean must be one of {MEANS}, not {mean!r}")
        total = float(sum(weights))
        if not weights or total <= 0 or any(w < 0 for w in weights):
            raise ValueError(f"ensemble weights must be >= 0 with a positive sum, got {weights!r}")
        self.member_weights = [float(w) / total for w in weights]
        self.mean = mean
        self.temperatures = [float(t) for t in (temperatures or [1.0] * len(weights))]
        self.binary = bool(binary)

    def _probs(self, p, temperature):
        p = ops.cast(p, "float32")
        if self.binary:
            p = ops.concatenate([1.0 - p, p], axis=-1)
        p = ops.clip(p, _EPS, 1.0)
        if temperature != 1.0:
            p = ops.softmax(ops.log(p) / temperature, axis=-1)
        return p

    def call(self, inputs):
        probs = [self._probs(p, t) for p, t in zip(inputs, self.temperatures, strict=True)]
        if self.mean == "arithmetic":
            out = sum(w * p for w, p in zip(self.member_weights, probs, strict=True))
        else:
            logs = sum(w * ops.log(p) for w, p in zip(self.member_weights, probs, strict=True))
            out = ops.softmax(logs, axis=-1)
        return out[:, 1:2] if self.binary else out

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 1 if self.binary else input_shapes[0][-1])

    def get_config(self):
        return {**super().get_config(), "weights": self.member_weights, "mean": self.mean,
                "temperatures": self.temperatures, "binary": self.binary}


@dataclass
class Member:
    """One model of an ensemble, with what it needs to be fed."""

    model: object
    name: str
    classes: list[str]
    task: str
    img_size: tuple[int, int]
    resize: str = "crop"
    temperature: float = 1.0
    metadata: dict = field(default_factory=dict)  # input name -> MetadataEncoding


def check_members(members: list[Member]) -> list[str]:
    """Refuse members that do not share the class list and task (a UsageError naming them);
    returns notes about differences that are allowed (input size, resize mode)."""
    if len(members) < 2:
        raise UsageError(f"an ensemble needs at least 2 models, got {len(members)}",
                         "pass two or more run directories or .keras files")
    first = members[0]
    for m in members[1:]:
        if m.classes != first.classes:
            raise UsageError(f"{m.name} has classes {', '.join(m.classes)} but {first.name} has "
                             f"{', '.join(first.classes)}: members must share the class list "
                             "in the same order",
                             "ensemble models trained on the same classes (pass --classes for "
                             "a bare .keras file)")
        if m.task != first.task:
            raise UsageError(f"{m.name} is a {m.task} model but {first.name} is {first.task}",
                             "ensemble models of the same task")
    encodings = {m.name: enc for m in members for enc in m.metadata.values()}
    distinct = {repr(e.to_dict()) for e in encodings.values()}
    if len(distinct) > 1:
        raise UsageError("the members that use metadata encode it differently ("
                         + ", ".join(encodings) + ")",
                         "ensemble models trained with the same --metadata fields on the same split")
    notes = []
    sizes = {m.img_size for m in members}
    if len(sizes) > 1:
        notes.append("members take different input sizes ("
                     + ", ".join(f"{m.name} {m.img_size[0]}x{m.img_size[1]}" for m in members)
                     + "): each gets the image resized from the largest")
    modes = {m.resize for m in members}
    if len(modes) > 1:
        notes.append(f"members were trained with different resize modes ({', '.join(sorted(modes))}); "
                     f"the ensemble uses {first.resize}")
    return notes


def build_ensemble(members: list[Member], weights=None, mean: str = "arithmetic",
                   name: str = "ensemble"):
    """One Keras model: image (+ metadata) -> the members' averaged probabilities."""
    from skinzoo.models.fusion import METADATA_INPUT

    check_members(members)
    if mean not in MEANS:
        raise UsageError(f"unknown mean {mean!r}", f"use one of: {', '.join(MEANS)}")
    weights = check_weights(weights, len(members))
    h = max(m.img_size[0] for m in members)
    w = max(m.img_size[1] for m in members)
    image = keras.Input(shape=(h, w, 3), name="image", dtype="float32")
    encoding = next((e for m in members for e in m.metadata.values()), None)
    meta = keras.Input(shape=(encoding.width,), name=METADATA_INPUT, dtype="float32") \
        if encoding is not None else None
    outputs = []
    for i, m in enumerate(members, start=1):
        x = image
        if m.img_size != (h, w):
            shrink = m.img_size[0] <= h and m.img_size[1] <= w
            x = keras.layers.Resizing(*m.img_size, interpolation="area" if shrink else "bilinear",
                                      name=f"member{i}_resize")(x)
        # A fresh Functional over the member's layers, renamed: two members may share a name.
        member = keras.Model(m.model.inputs, m.model.outputs, name=f"member{i}_{_safe(m.name)}")
        feeds = [x if len(t.shape) == 4 else meta for t in m.model.inputs]
        if any(f is None for f in feeds):
            raise UsageError(f"{m.name} has an input skinzoo cannot feed in an ensemble "
                             "(not an image, not metadata trained with --metadata)",
                             "ensemble zoo models, or models trained by skinzoo")
        out = member(feeds if len(feeds) > 1 else feeds[0])
        outputs.append(out[0] if isinstance(out, list | tuple) else out)
    binary = len(members[0].classes) == 2
    mean_layer = ProbabilityMean(weights, mean, [m.temperature for m in members], binary,
                                 name="predictions")
    inputs = [image] + ([meta] if meta is not None else [])
    return keras.Model(inputs, mean_layer(outputs), name=name)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in str(name))[:40]


def check_weights(weights, n: int) -> list[float]:
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise UsageError(f"{len(weights)} weight(s) for {n} models", f"give exactly {n} weights")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise UsageError(f"ensemble weights {weights} must be >= 0 with a positive sum")
    return [w / sum(weights) for w in weights]


def parse_weights(text: str | None):
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--weights {text!r} is not a list of numbers", "write e.g. --weights 2,1,1") from None


def combine(probs, weights, mean: str = "arithmetic") -> np.ndarray:
    """NumPy twin of :class:`ProbabilityMean` on ``(M, N, K)`` calibrated member probabilities."""
    probs = np.clip(np.asarray(probs, np.float64), _EPS, 1.0)
    w = np.asarray(weights, np.float64)[:, None, None] / np.sum(weights)
    if mean == "arithmetic":
        return (w * probs).sum(0)
    logs = (w * np.log(probs)).sum(0)
    e = np.exp(logs - logs.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def fit_weights(probs, y, mean: str = "arithmetic") -> list[float]:
    """Member weights on the simplex minimising the log loss of ``combine(probs)`` on labels
    ``y``: give it VALIDATION predictions only.

    Why log loss and not balanced accuracy: balanced accuracy is a step function of the weights
    (it changes only when some image's arg-max flips), so on a few hundred validation images a
    search over it lands on whichever flat plateau happened to catch a handful of rare-class
    images, and it says nothing about weights that shift probabilities without flipping a
    decision. Log loss is smooth, uses every image's full probability, and its minimiser is the
    best-calibrated mixture; the caller prints validation balanced accuracy with equal and fitted
    weights so a user sees what the fit did to the decision metric. The search is deterministic:
    a softmax parametrisation (weights > 0, summing to 1) started at equal weights, Nelder-Mead
    for up to 3 members, Powell beyond (no random restarts)."""
    from scipy.optimize import minimize

    probs = np.asarray(probs, np.float64)
    y = np.asarray(y, int)
    m = probs.shape[0]

    def loss(z):
        w = np.exp(z - z.max())
        p = combine(probs, w / w.sum(), mean)[np.arange(len(y)), y]
        return -np.mean(np.log(np.clip(p, _EPS, 1.0)))

    result = minimize(loss, np.zeros(m), method="Nelder-Mead" if m <= 3 else "Powell",
                      options={"xatol": 1e-4, "fatol": 1e-6, "maxiter": 2000} if m <= 3 else {})
    w = np.exp(result.x - result.x.max())
    return (w / w.sum()).tolist()
