"""Streaming Keras metrics used during training (the final numbers come from
``skinzoo.metrics`` on the saved model; these only steer checkpoints and early stopping).

Targets follow the pipeline contract: one-hot ``(B, K)`` for K > 2, ``(B, 1)`` 0/1 for K == 2.
"""

from __future__ import annotations

import keras
from keras import ops


def _class_indices(y_true, y_pred, num_classes):
    if num_classes == 2:
        t = ops.cast(ops.reshape(y_true, (-1,)) > 0.5, "int32")
        p = ops.cast(ops.reshape(y_pred, (-1,)) > 0.5, "int32")
    else:
        t = ops.argmax(y_true, axis=-1)
        p = ops.argmax(y_pred, axis=-1)
    return t, p


@keras.saving.register_keras_serializable(package="skinzoo")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean per-class recall from a streamed confusion matrix; classes absent from the data so far
    are left out of the mean (as scikit-learn does)."""

    def __init__(self, num_classes, name="balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.confusion = self.add_variable(shape=(self.num_classes, self.num_classes),
                                           initializer="zeros", name="confusion")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t, p = _class_indices(y_true, y_pred, self.num_classes)
        k = self.num_classes
        cm = ops.matmul(ops.transpose(ops.one_hot(t, k)), ops.one_hot(p, k))
        self.confusion.assign_add(ops.cast(cm, self.confusion.dtype))

    def result(self):
        support = ops.sum(self.confusion, axis=1)
        recall = ops.divide_no_nan(ops.diagonal(self.confusion), support)
        present = ops.cast(support > 0, recall.dtype)
        return ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))

    def reset_state(self):
        self.confusion.assign(ops.zeros_like(self.confusion))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="skinzoo")
class Specificity(keras.metrics.Metric):
    """True-negative rate of a single-sigmoid binary model at threshold 0.5."""

    def __init__(self, name="specificity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.tn = self.add_variable(shape=(), initializer="zeros", name="tn")
        self.neg = self.add_variable(shape=(), initializer="zeros", name="neg")

    def update_state(self, y_true, y_pred, sample_weight=None):
        t, p = _class_indices(y_true, y_pred, 2)
        negative = ops.cast(t == 0, "float32")
        self.tn.assign_add(ops.sum(negative * ops.cast(p == 0, "float32")))
        self.neg.assign_add(ops.sum(negative))

    def result(self):
        return ops.divide_no_nan(self.tn, self.neg)

    def reset_state(self):
        self.tn.assign(0.0)
        self.neg.assign(0.0)


def training_metrics(num_classes: int) -> list:
    """accuracy, balanced accuracy, macro AUC; plus sensitivity and specificity for binary."""
    if num_classes == 2:
        return [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            BalancedAccuracy(2),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Recall(name="sensitivity"),
            Specificity(),
        ]
    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        BalancedAccuracy(num_classes),
        keras.metrics.AUC(multi_label=True, num_labels=num_classes, name="auc"),
    ]


def monitor_mode(monitor: str) -> str:
    """'min' for losses, 'max' for everything else."""
    return "min" if monitor.endswith("loss") else "max"
