import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from skinzoo.train.metrics import BalancedAccuracy, Specificity


def test_balanced_accuracy_matches_sklearn_streamed():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    y[:5] = 3
    probs = rng.random((200, 4)).astype("float32")
    m = BalancedAccuracy(4)
    for chunk in np.array_split(np.arange(200), 7):
        m.update_state(np.eye(4, dtype="float32")[y[chunk]], probs[chunk])
    assert float(m.result()) == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)), abs=1e-6)


def test_balanced_accuracy_binary_and_collapse():
    y = np.array([0] * 95 + [1] * 5, "float32")[:, None]
    all_benign = np.zeros((100, 1), "float32")
    m = BalancedAccuracy(2)
    m.update_state(y, all_benign)
    assert float(m.result()) == pytest.approx(0.5)  # accuracy would be 0.95
    s = Specificity()
    s.update_state(y, all_benign)
    assert float(s.result()) == pytest.approx(1.0)
