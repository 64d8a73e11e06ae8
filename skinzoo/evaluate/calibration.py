"""Temperature scaling: one scalar T fitted on the validation split, ``softmax(logits / T)``.

The models output probabilities, not logits; ``log(p)`` differs from the logits only by a
per-sample constant, which softmax ignores, so scaling ``log(p)`` is exact temperature scaling.
For a sigmoid model the ``(N, 2)`` form ``[1-p, p]`` gives ``sigmoid(logit / T)`` the same way.
Temperature scaling never changes the argmax, so accuracy is unchanged; only confidence moves.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-12
_T_RANGE = (0.05, 20.0)


def apply_temperature(probs, temperature: float) -> np.ndarray:
    """``(N, K)`` probabilities rescaled with temperature ``T`` (T > 1 softens, T < 1 sharpens)."""
    probs = np.asarray(probs, dtype=np.float64)
    if temperature == 1.0:
        return probs
    z = np.log(np.clip(probs, _EPS, 1.0)) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def negative_log_likelihood(y_true, probs) -> float:
    probs = np.asarray(probs, dtype=np.float64)
    picked = probs[np.arange(len(probs)), np.asarray(y_true, dtype=int)]
    return float(-np.mean(np.log(np.clip(picked, _EPS, 1.0))))


def fit_temperature(y_val, probs_val) -> dict:
    """The T minimising validation NLL (bounded 1-D search over log T), with NLL/ECE before/after."""
    from scipy.optimize import minimize_scalar

    from skinzoo.metrics import expected_calibration_error

    y_val = np.asarray(y_val, dtype=int)
    probs_val = np.asarray(probs_val, dtype=np.float64)
    log_t = minimize_scalar(
        lambda lt: negative_log_likelihood(y_val, apply_temperature(probs_val, float(np.exp(lt)))),
        bounds=tuple(np.log(_T_RANGE)), method="bounded", options={"xatol": 1e-4},
    ).x
    t = float(np.exp(log_t))
    after = apply_temperature(probs_val, t)
    return {
        "temperature": t,
        "n_val": int(len(y_val)),
        "nll_before": negative_log_likelihood(y_val, probs_val),
        "nll_after": negative_log_likelihood(y_val, after),
        "ece_before": expected_calibration_error(y_val, probs_val),
        "ece_after": expected_calibration_error(y_val, after),
    }
