"""`skinzoo` command group. Commands live one module each and import the library lazily."""

from __future__ import annotations

import logging
import os
import sys
import traceback

import click
from skinzoo_cli.ranges import click_type
from skinzoo_cli.settings import Settings

from skinzoo import __version__
from skinzoo.errors import SkinzooError
from skinzoo.progress import configure as configure_progress
from skinzoo.ranges import SEED

# name -> (module, attribute, one-line help). Loading on demand keeps `skinzoo --help` fast
# and means a broken command cannot take the whole CLI down: the others still run, and using
# the broken one says why it cannot load (CommandLoadError) instead of "No such command".
COMMANDS = {
    "data": ("skinzoo_cli.data", "data", "Make, check, explore and preview datasets."),
    "models": ("skinzoo_cli.models", "models", "List the model zoo (name, size, defaults)."),
    "train": ("skinzoo_cli.train", "train", "Train a model; writes a run directory."),
    "evaluate": ("skinzoo_cli.evaluate", "evaluate", "Metrics (and --report) for a run or model."),
    "predict": ("skinzoo_cli.evaluate", "predict", "Class probabilities for images or a folder."),
    "gradcam": ("skinzoo_cli.evaluate", "gradcam", "Grad-CAM heatmaps and overlays for images."),
    "calibrate": ("skinzoo_cli.evaluate", "calibrate", "Fit temperature scaling on validation."),
    "compare": ("skinzoo_cli.evaluate", "compare", "Leaderboard of several runs."),
    "ensemble": ("skinzoo_cli.ensemble", "ensemble", "Combine trained models into one averaging model."),
    "export": ("skinzoo_cli.export", "export", "SavedModel / TFLite / ONNX export, verified, with a model card."),
    "info": ("skinzoo_cli.info", "info", "Versions, devices, memory, paths: paste it into bug reports."),
}


class CommandLoadError(SkinzooError):
    """A command's module exists but does not import (a broken install or a missing dependency)."""

    exit_code = 1


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when used; ``table`` is name -> (module,
    attribute, one-line help). Catches library errors and prints them as one line."""

    table: dict = COMMANDS

    def __init__(self, *args, table=None, **kwargs):
        super().__init__(*args, **kwargs)
        if table is not None:
            self.table = table

    def list_commands(self, ctx):
        return sorted(n for n in self.table if self._available(n)) + sorted(self.commands)

    def get_command(self, ctx, name):
        if name in self.commands:
            return self.commands[name]
        if name not in self.table:
            return None
        import importlib

        module, attr, _ = self.table[name]
        if not self._available(name):
            return None  # not installed: listed nowhere, "No such command"
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            prog, _, group = ctx.command_path.partition(" ")
            again = " ".join(part for part in (prog, "--debug", group, name) if part)
            raise CommandLoadError(
                f"the {name!r} command cannot be loaded: {err}",
                "reinstall skinzoo (`pip install -e .`, `make install`) or install the missing "
                f"package; `{again}` shows the traceback") from err

    def _available(self, name):
        import importlib.util

        return importlib.util.find_spec(self.table[name][0]) is not None

    def format_commands(self, ctx, formatter):
        # One-line descriptions from the table, without importing every command module.
        rows = [(n, self.table[n][2]) for n in self.list_commands(ctx) if n in self.table]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SkinzooError as err:
            if _debug(ctx):
                traceback.print_exc()
            click.echo(f"error: {err.message}", err=True)
            if err.hint:
                click.echo(f"  hint: {err.hint}", err=True)
            ctx.exit(err.exit_code)
        except KeyboardInterrupt as err:
            from skinzoo.runtime import Terminated

            terminated = isinstance(err, Terminated)  # SIGTERM outside the training loop
            click.echo("terminated (SIGTERM)" if terminated else "interrupted", err=True)
            ctx.exit(143 if terminated else 130)


def _debug(ctx) -> bool:
    """--debug, also when the error comes before the group's callback has stored the Settings
    (a subcommand is looked up, and may fail to load, before that callback runs)."""
    settings = ctx.find_object(Settings)
    return settings.debug if settings is not None else bool(ctx.params.get("debug"))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="skinzoo")
@click.option("--seed", type=click_type(SEED), default=None, help="Seed for every RNG (default: per command).")
@click.option("-v/-q", "--verbose/--quiet", default=None, help="More or less output.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]),
              default="info", show_default=True, help="Python logging level.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx, seed, verbose, log_level, debug):
    """skinzoo: train, evaluate and explain medical image classifiers.

    Start with `skinzoo data synth demo/` and `skinzoo train --data demo/`.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    level = "warning" if verbose is False else ("debug" if verbose else log_level)
    logging.basicConfig(level=level.upper(), format="%(message)s")
    ctx.obj = Settings(seed=seed, verbose=verbose, debug=debug)
    configure_progress("quiet" if verbose is False else ("verbose" if verbose else "normal"))


def main(argv=None):
    if "--debug" not in (argv if argv is not None else sys.argv):
        from skinzoo.progress import attach_terminal
        from skinzoo.runtime import filter_native_stderr

        attach_terminal()  # the live progress line bypasses the line-based filter
        filter_native_stderr()  # the real program only: never inside a test runner's process
    try:
        cli.main(args=argv, prog_name="skinzoo")
    except SkinzooError as err:  # raised outside invoke (e.g. in a callback)
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)


if __name__ == "__main__":
    main()
