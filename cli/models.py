"""`skinzoo models [PATTERN]`: the model zoo as a table."""

from __future__ import annotations

import click


@click.command()
@click.argument("pattern", required=False, default="*")
@click.option("--no-size", is_flag=True,
              help="Skip parameters and MACs (they need each model built once; ~1 s per deep net).")
@click.option("--markdown", is_flag=True, help="Print a Markdown table (the README's model table).")
def models(pattern, no_size, markdown):
    """List the registered models matching PATTERN (wildcards: "resnet*", "*cnn").

    Columns: parameters and multiply-accumulates of one image at the model's default input size
    and options with 1000 classes (as model zoos report them; FLOPs ≈ 2 × MACs), default size, batch and learning rate, whether ImageNet weights can be
    loaded (weights="imagenet" online, or a local weights file).
    """
    from skinzoo.errors import UsageError
    from skinzoo.models.registry import get_model_info, list_models

    names = list_models(pattern)
    if not names:
        raise UsageError(f"no model matches {pattern!r}",
                         "run `skinzoo models` for every name; quote wildcards in the shell.")
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
