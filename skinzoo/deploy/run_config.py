"""A run's resolved ``config.toml`` read as data (for exports, model cards and subgroups)."""

from __future__ import annotations

import tomllib

from skinzoo.errors import UsageError


def read_run_config(run) -> dict:
    """The run's ``config.toml`` as a dict; {} without a run or without the file."""
    if run is None or not run.config.is_file():
        return {}
    try:
        with open(run.config, "rb") as fh:
            return tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UsageError(f"cannot read {run.config}: {err}",
                         "restore the file, or pass the model file instead of the run") from None
