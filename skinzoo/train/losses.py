"""Losses beyond Keras' own: logit-adjusted cross-entropy for imbalanced classes.

Logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021) adds
``tau * log(prior)`` to the logits inside the loss only. The network then learns logits of the
class-balanced posterior, so its plain softmax (what predict/evaluate use) is already corrected
for the skewed training prior: no weights, no resampling, and no test-time change. With tau = 1
it is the "balanced softmax" of Ren et al. 2020.

The zoo's models end in softmax / sigmoid probabilities, not logits; ``log(p)`` differs from the
logits by a per-sample constant, which softmax ignores, so the loss works on probabilities.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

_EPS = 1e-7


@keras.saving.register_keras_serializable(package="skinzoo")
class LogitAdjustedCrossentropy(keras.losses.Loss):
    """Cross-entropy of ``softmax(log p + tau * log prior)`` (K > 2) or of the sigmoid of
    ``logit(p) + tau * log(prior_1 / prior_0)`` (one sigmoid unit, K == 2)."""

    def __init__(self, prior, tau=1.0, label_smoothing=0.0, name="logit_adjusted_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        prior = np.asarray(prior, np.float64)
        if prior.ndim != 1 or len(prior) < 2 or (prior <= 0).any():
            raise ValueError(f"prior must be K >= 2 positive class frequencies, got {prior.tolist()}")
        self.prior = (prior / prior.sum()).tolist()
        self.tau = float(tau)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        p = ops.clip(ops.cast(y_pred, "float32"), _EPS, 1.0 - _EPS)
        log_prior = np.log(np.asarray(self.prior, np.float32))
        if len(self.prior) == 2 and p.shape[-1] == 1:
            shift = self.tau * float(log_prior[1] - log_prior[0])
            logits = ops.log(p) - ops.log(1.0 - p) + shift
            if self.label_smoothing:
                y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
            return ops.mean(ops.binary_crossentropy(y_true, logits, from_logits=True), axis=-1)
        logits = ops.log(p) + self.tau * ops.convert_to_tensor(log_prior)
        if self.label_smoothing:
            k = len(self.prior)
            y_true = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / k
        return -ops.sum(y_true * ops.log_softmax(logits, axis=-1), axis=-1)

    def get_config(self):
        return {**super().get_config(), "prior": self.prior, "tau": self.tau,
                "label_smoothing": self.label_smoothing}
