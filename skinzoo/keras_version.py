"""The Keras versions skinzoo is tested on, and every private Keras API it still uses.

setup.cfg pins Keras to the minor range the test suite ran on (:data:`TESTED`). Three jobs still
need Keras internals; each is a row of :data:`PRIVATE_USES` with the Keras versions it was checked
on, and code reaches those internals only after :func:`is_checked` says the running Keras is one
of them. Outside that range a workaround is not applied (one warning says so) and graph replay
refuses with a clear error, rather than patching internals nobody has looked at.

Which test tells when a row can go: ``tests/train/test_keras_compat_multiworker.py`` reproduces
the two multi-worker bugs without their workarounds and fails with "delete workaround ..." once a
Keras release fixes them; ``tests/evaluate/test_gradcam_paths.py`` covers graph replay.

The version is read from the installed package's metadata, so asking costs no TensorFlow start-up.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import metadata

log = logging.getLogger(__name__)

Version = tuple[int, int, int]
TESTED = ((3, 15), (3, 16))  # [from, until) minor versions: keep in step with setup.cfg's pin


@dataclass(frozen=True)
class PrivateUse:
    """One use of Keras internals: what it touches, why, and the Keras versions it was checked on
    (``checked``: ``[from, until)`` as (major, minor))."""

    key: str
    symbols: str
    why: str
    checked: tuple[tuple[int, int], tuple[int, int]]


PRIVATE_USES = {
    use.key: use
    for use in (
        PrivateUse(
            "multi-worker symbolic build",
            "Trainer._symbolic_build, TensorFlowTrainer._maybe_symbolic_build",
            "fit() builds metrics by averaging one distributed input batch with an eager "
            "collective reduce, which MultiWorkerMirroredStrategy refuses ('Attempt to convert a "
            "value (PerReplica...'); skinzoo builds from one local batch instead",
            TESTED),
        PrivateUse(
            "multi-worker scalar reduce",
            "keras.src.backend.tensorflow.trainer.reduce_per_replica",
            "the scalar logs of a step are reduced with strategy.reduce(MEAN, v, axis=0), which "
            "fails for 0-d values under MultiWorkerMirroredStrategy ('Invalid reduction dimension "
            "0'); skinzoo reduces scalars with axis=None (the same mean)",
            TESTED),
        PrivateUse(
            "graph replay",
            "Functional._run_through_graph, Sequential._functional",
            "Grad-CAM of a layer inside a nested sub-model (ensembles, a backbone used as one "
            "layer) replays the outer graph to reach the inner activation; Keras has no public "
            "way to expose it. Flat graphs use the public keras.Model(inputs, [layer.output, "
            "...]) instead",
            TESTED),
    )
}

_WARNED: set[str] = set()


def parse_version(text: str) -> Version:
    """``"3.15.1"`` -> (3, 15, 1); pre-release tags (``3.16.0rc1``, ``3.16.0.dev2025``) are
    dropped, so a release candidate counts as the release it precedes."""
    parts = [int(m.group()) if (m := re.match(r"\d+", p)) else 0 for p in text.split(".")[:3]]
    return tuple((parts + [0, 0, 0])[:3])


def keras_version() -> Version:
    return parse_version(metadata.version("keras"))


def version_text(version: Version | None = None) -> str:
    return ".".join(map(str, version or keras_version()))


def range_text(checked: tuple[tuple[int, int], tuple[int, int]]) -> str:
    (a, b), (c, d) = checked
    return f">={a}.{b},<{c}.{d}"


def is_checked(key: str, version: Version | None = None) -> bool:
    """True when ``version`` (default: the installed Keras) is in the range ``key`` was checked on."""
    low, high = PRIVATE_USES[key].checked
    return low <= tuple((version or keras_version())[:2]) < high


def warn_unchecked_once(key: str, consequence: str) -> None:
    """One warning per process that the private use ``key`` is skipped on this Keras."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    use = PRIVATE_USES[key]
    log.warning("warning: Keras %s is outside keras%s, where the workaround '%s' was checked; %s",
                version_text(), range_text(use.checked), key, consequence)
