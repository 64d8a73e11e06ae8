"""Datasets: readers (``sources``), image checks (``images``, ``check``), grouped splits (``splits``),
the input pipeline and the synthetic demo set. Submodules are imported on use, never here, so
``import skinzoo.data`` stays cheap."""
