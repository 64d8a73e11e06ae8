"""cli/main.py's lazy command table and the global options object on the context."""

from __future__ import annotations

import click
from click.testing import CliRunner
from skinzoo_cli.main import COMMANDS, cli
from skinzoo_cli.settings import Settings, pass_settings


def test_a_command_module_that_fails_to_import_says_why(tmp_path, monkeypatch):
    """Not "No such command": the ImportError's own message, one line, a hint, exit 1."""
    (tmp_path / "skinzoo_broken_cmd.py").write_text(
        "import skinzoo_no_such_dependency  # a dependency that is not installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(COMMANDS, "broken", ("skinzoo_broken_cmd", "broken", "A broken command."))
    result = CliRunner().invoke(cli, ["broken", "--help"], prog_name="skinzoo")
    assert result.exit_code == 1, result.output
    assert "No such command" not in result.output and "Traceback" not in result.output
    assert ("error: the 'broken' command cannot be loaded: No module named "
            "'skinzoo_no_such_dependency'") in result.output
    assert "hint:" in result.output and "skinzoo --debug broken" in result.output
    debug = CliRunner().invoke(cli, ["--debug", "broken"])
    assert debug.exit_code == 1 and "Traceback" in debug.output
    assert "ModuleNotFoundError" in debug.output
    # the other commands are untouched, and the broken one is still listed
    listing = CliRunner().invoke(cli, ["--help"])
    assert listing.exit_code == 0 and "  broken " in listing.output


def test_a_missing_attribute_in_a_data_subcommand_surfaces_too(tmp_path, monkeypatch):
    from skinzoo_cli.data import DATA_COMMANDS

    (tmp_path / "skinzoo_empty_cmd.py").write_text("'''no command here'''\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(DATA_COMMANDS, "empty", ("skinzoo_empty_cmd", "empty", "Nothing."))
    result = CliRunner().invoke(cli, ["data", "empty"], prog_name="skinzoo")
    assert result.exit_code == 1, result.output
    assert "the 'empty' command cannot be loaded" in result.output and "'empty'" in result.output
    assert "skinzoo --debug data empty" in result.output


def test_a_command_whose_module_is_not_installed_is_unknown(monkeypatch):
    monkeypatch.setitem(COMMANDS, "absent", ("skinzoo_cli.no_such_module", "absent", "Absent."))
    result = CliRunner().invoke(cli, ["absent"])
    assert result.exit_code == 2 and "No such command" in result.output
    assert "  absent " not in CliRunner().invoke(cli, ["--help"]).output


def test_global_options_reach_a_command_as_settings():
    seen = []

    @click.command()
    @click.option("--seed", type=int, default=None)
    @pass_settings
    def probe(settings, seed):
        seen.append((settings, settings.seed_for(seed)))

    cli.add_command(probe)
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["--seed", "7", "-q", "--debug", "probe"]).exit_code == 0
        assert runner.invoke(cli, ["--seed", "7", "probe", "--seed", "3"]).exit_code == 0
        assert runner.invoke(cli, ["probe"]).exit_code == 0
    finally:
        cli.commands.pop("probe")
    (s1, seed1), (s2, seed2), (s3, seed3) = seen
    assert s1 == Settings(seed=7, verbose=False, debug=True) and s1.quiet and seed1 == 7
    assert seed2 == 3  # the command's own --seed wins
    assert s3 == Settings() and seed3 == 0 and not s3.quiet
    # a command run on its own (no group) gets the defaults
    assert CliRunner().invoke(probe, []).exit_code == 0 and seen[-1][1] == 0
