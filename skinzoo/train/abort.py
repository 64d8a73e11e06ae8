"""Whether the current ``fit`` was cut short, and where: the state the training callbacks share.

A NaN loss (:class:`~skinzoo.train.callbacks.NaNGuard`), Ctrl-C or SIGTERM
(:class:`~skinzoo.train.callbacks.InterruptHandler`) or a cluster preemption
(:class:`~skinzoo.train.preemption.PreemptionGuard`) stops training mid-epoch and records it
here; the callbacks that write history, checkpoints and backups read it and skip the cut-short
epoch; after ``fit`` the job turns it into the error the user sees
(:func:`skinzoo.train.parts.raise_if_aborted`). The job makes one and hands it to every callback,
so no flag is hung on the Keras model.
"""

from __future__ import annotations

from dataclasses import dataclass

ABORT_KINDS = ("nan", "interrupt", "preempted")


@dataclass
class AbortState:
    kind: str | None = None  # one of ABORT_KINDS once aborted
    epoch: int = 0  # 0-based epoch and batch of the fit in which it happened
    batch: int = 0

    @property
    def aborted(self) -> bool:
        return self.kind is not None

    def set(self, kind: str, epoch: int, batch: int) -> None:
        if kind not in ABORT_KINDS:
            raise ValueError(f"unknown abort kind {kind!r}; one of {', '.join(ABORT_KINDS)}")
        self.kind, self.epoch, self.batch = kind, int(epoch), int(batch)
