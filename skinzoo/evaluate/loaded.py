"""The model-plus-context record every prediction path passes around.

Its own module, below both :mod:`skinzoo.evaluate.predict` (which loads .keras files and runs) and
:mod:`skinzoo.evaluate.exported` (which loads exports), so neither has to import the other to build one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadedModel:
    """A model with everything needed to use it on images."""

    model: object
    classes: list[str]
    img_size: tuple[int, int]
    resize: str = "crop"
    task: str = "multiclass"
    source: Path | None = None
    run: object | None = None  # skinzoo.rundir.RunDir when loaded from a run
    temperature: float = 1.0
    threshold: dict | None = None  # threshold.json contents (binary runs)
    tta: int | None = None  # tta.json's views (fitted on validation); None = not fitted yet
    notes: list[str] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)  # input name -> MetadataEncoding (encoded inputs)
    meta: dict | None = None  # input name -> values for every image (--meta)
    meta_rows: dict | None = None  # input name -> {path: vector} (a dataset's own columns)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def name(self) -> str:
        return self.run.path.name if self.run is not None else Path(self.source).stem
