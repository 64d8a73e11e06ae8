"""The global options (`skinzoo --seed N -v/-q --debug COMMAND`) as one object on the context.

The group stores a :class:`Settings` in ``ctx.obj``; a command takes it with ``@pass_settings``
(Click's ``make_pass_decorator``; a command run on its own, without the group, gets the
defaults) and reads every global option from it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import click


@dataclass(frozen=True)
class Settings:
    seed: int | None = None  # the global --seed; None when not given
    verbose: bool | None = None  # -v True, -q False, neither None
    debug: bool = False  # --debug: tracebacks on errors

    @property
    def quiet(self) -> bool:
        return self.verbose is False

    def seed_for(self, own_seed: int | None, default: int | None = 0) -> int | None:
        """A command's own --seed if given, else the global --seed, else ``default``."""
        if own_seed is not None:
            return own_seed
        return default if self.seed is None else self.seed


pass_settings = click.make_pass_decorator(Settings, ensure=True)
