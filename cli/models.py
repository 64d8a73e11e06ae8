"""`skinzoo models [PATTERN]`: the model zoo as a table."""

from __future__ import annotations

import click


@click.command()
@click.argument("pattern", required=False, default="*")
@click.option("--no-size", is_flag=True,
              help="Skip parameters and MACs (they need each model built once; ~1 s per deep net).")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (the README's model table).")
@click.option("--speed", is_flag=True,
              help="Measure train and inference images/s of each model on this machine instead "
                   "(random weights, synthetic batches, a few steps after a warm-up).")
@click.option("--models", "models_pattern", metavar="PATTERN",
              help="Which models to list or measure (same as the PATTERN argument).")
@click.option("--size", type=click.IntRange(16, 1024), metavar="N",
              help="With --speed: input size in pixels [each model's default size].")
def models(pattern, no_size, markdown, speed, models_pattern, size):
    """List the registered models matching PATTERN (wildcards: "resnet*", "*cnn").

    Columns: parameters and multiply-accumulates of one image at the model's default input size
    and options with 1000 classes (as model zoos report them; FLOPs ≈ 2 × MACs), default size, batch and learning rate, whether ImageNet weights can be
    loaded (weights="imagenet" online, or a local weights file).

    With --speed: train and inference images/s measured here at the default size and batch,
    and the CPU use while training (200% = both cores of a 2-core machine busy), e.g.
    `skinzoo models --speed --models "resnet*" --size 128`.
    """
    from skinzoo.errors import UsageError
    from skinzoo.models.registry import get_model_info, list_models

    if models_pattern is not None and pattern != "*" and models_pattern != pattern:
        raise UsageError(f"two model patterns given ({pattern!r} and --models {models_pattern!r})",
                         "give the pattern once, as an argument or with --models")
    pattern = models_pattern or pattern
    if size is not None and not speed:
        raise UsageError("--size applies to --speed only", "add --speed, or drop --size")
    names = list_models(pattern)
    if not names:
        raise UsageError(f"no model matches {pattern!r}",
                         "run `skinzoo models` for every name; quote wildcards in the shell.")
    if speed:
        _speed_table(names, size, markdown)
        return
    rows = []
    for name in names:
        info = get_model_info(name)
        params, macs = ("-", "-") if no_size else _size_of(name)
        rows.append([name, info.family, params, macs, f"{info.default_size} px",
                     str(info.default_batch), f"{info.default_lr:g}",
                     "yes" if info.pretrained else "no", info.description])
    header = ["name", "family", "params", "GMACs", "size", "batch", "lr", "imagenet",
              "description"]
    click.echo(_markdown(header, rows) if markdown else _table(header, rows))


def _speed_table(names, size, markdown):
    """One row printed as each model is measured (deep models at 224 px take a while on a CPU)."""
    from skinzoo.models.speed import machine_is_shared, measure_speed

    header = ["name", "size", "batch", "train img/s", "train CPU %", "predict img/s", "note"]
    note = machine_is_shared()
    if note:
        click.echo(note, err=True)
    click.echo(_markdown(header, []) if markdown else _speed_line(header))
    for name in names:
        s = measure_speed(name, size=size)
        row = [s.name, f"{s.size} px", str(s.batch), _ips(s.train_ips),
               _ips(s.train_cpu_percent, "{:.0f}"), _ips(s.predict_ips), s.error or ""]
        click.echo(_markdown(header, [row]).splitlines()[-1] if markdown else _speed_line(row))


def _speed_line(cells, widths=(15, 7, 5, 11, 11, 13)):
    """Name left-aligned, figures right-aligned, the note (an error, if any) last."""
    *fixed, note = cells
    line = "  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                     for i, (c, w) in enumerate(zip(fixed, widths, strict=True)))
    return (line + "  " + note).rstrip()


def _ips(value, form="{:,.1f}"):
    return "-" if value is None else form.format(value)


def _markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _size_of(name):
    """(parameters, GMACs) at the default input, built with random weights and freed again."""
    from skinzoo.models.registry import build_model, count_macs
    from skinzoo.runtime import tf

    tf()
    import keras

    model = build_model(name, 1000)
    params, macs = model.count_params(), count_macs(model)
    del model
    keras.backend.clear_session()
    return f"{params / 1e6:.2f}M", f"{macs / 1e9:.2f}"


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) if i < 2 else str(c).rjust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=False))]
        lines.append("  ".join(cells + [row[-1]]))
    return "\n".join(lines)
