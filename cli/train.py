"""`skinzoo train`: parse options, hand them to skinzoo.train.fit, print what happened."""

from __future__ import annotations

import click
from skinzoo_cli.ranges import click_type
from skinzoo_cli.settings import pass_settings

from skinzoo.config import (
    AUGMENT_PRESETS,
    BALANCES,
    CACHE_MODES,
    CLUSTERS,
    COLOR_CONSTANCY,
    LOSSES,
    OPTIMIZERS,
    PRECISIONS,
    RESIZE_MODES,
    SCHEDULES,
    STAGES,
    TASKS,
)
from skinzoo.data.sources import FORMATS

# Every option defaults to None ("not given") so a --config file can supply it.
_OPTIONS = [
    click.option("--data", type=str, help="Dataset folder or CSV (HAM10000, ISIC 2019, CSV, class folders)."),
    click.option("--format", "format", type=click.Choice(FORMATS),
                 help="Dataset format [auto]."),
    click.option("--task", type=click.Choice(TASKS), help="binary = benign/malignant [multiclass]."),
    click.option("--image-col", help="Image column of a generic CSV."),
    click.option("--label-col", help="Label column of a generic CSV."),
    click.option("--allow-outside-root/--no-allow-outside-root", default=None,
                 help="Accept CSV paths outside the dataset folder."),
    click.option("--split-file", type=click.Path(dir_okay=False), help="Reuse a split.csv."),
    click.option("--val", type=click_type("val"), help="Validation share [0.15]."),
    click.option("--test", type=click_type("test"), help="Test share [0.15]."),
    click.option("--model", help="Model name (skinzoo models) [compact_resnet]."),
    click.option("--weights", help="imagenet | none | PATH to a weights/.keras file [model default]."),
    click.option("--img-size", type=click_type("img_size"), help="Input side in pixels [model default]."),
    click.option("--batch-size", type=click_type("batch_size"), help="Batch size per replica [model default]."),
    click.option("--epochs", type=click_type("epochs"), help="Epochs [10]."),
    click.option("--lr", type=click_type("lr"), help="Peak learning rate [model default]."),
    click.option("--optimizer", type=click.Choice(OPTIMIZERS), help="[adam]"),
    click.option("--weight-decay", type=click_type("weight_decay"), help="AdamW weight decay [1e-4 with adamw]."),
    click.option("--clipnorm", type=click_type("clipnorm"), help="Clip gradients to this norm."),
    click.option("--label-smoothing", type=click_type("label_smoothing"), help="[0]"),
    click.option("--schedule", type=click.Choice(SCHEDULES), help="[warmup-cosine]"),
    click.option("--warmup-epochs", type=click_type("warmup_epochs"), help="Warm-up length for warmup-cosine [1]."),
    click.option("--early-stopping", type=click_type("early_stopping"), help="Patience in epochs; 0 = off [0]."),
    click.option("--monitor", help="Metric for the best checkpoint [val_balanced_accuracy]."),
    click.option("--balance", type=click.Choice(BALANCES), help="Class imbalance handling [class-weight]."),
    click.option("--metadata", help="Fuse patient metadata: any of age,sex,site (the dataset's own columns)."),
    click.option("--metadata-cols", help="Metadata from a CSV's own columns: NAME[=COLUMN],... (numbers or categories)."),
    click.option("--metadata-dropout", type=click.FloatRange(0, 1, max_open=True),
                 help="Chance of hiding each metadata field per training sample [0.3]."),
    click.option("--class-weight-power", type=click.FloatRange(0, 2),
                 help="With --balance class-weight: weight = (inverse frequency)^POWER; 0.5 = tempered [1]."),
    click.option("--loss", type=click.Choice(LOSSES),
                 help="logit-adjusted: the class prior added to the logits in the loss (use with --balance none) "
                      "[crossentropy]."),
    click.option("--augment", type=click.Choice(AUGMENT_PRESETS),
                 help="Training augmentation; dermoscopy = any-angle rotation, resized crop, colour jitter, blur [light]."),
    click.option("--mixup", type=click.FloatRange(0, 10), help="Mixup alpha (Beta(a, a) pair mixing); 0 = off [0]."),
    click.option("--cutmix", type=click.FloatRange(0, 10), help="CutMix alpha; 0 = off [0]. With --mixup: one of the two per batch."),
    click.option("--color-constancy", type=click.Choice(COLOR_CONSTANCY),
                 help="Colour normalisation inside the model (so predict/evaluate/export apply it too) [none]."),
    click.option("--color-power", type=click.FloatRange(1, 20), help="Minkowski norm p of shades-of-gray [6]."),
    click.option("--ema", type=click.FloatRange(0, 1, max_open=True),
                 help="Exponential moving average of the weights (e.g. 0.999); validation, checkpoints and "
                      "the saved model use it; 0 = off [0]."),
    click.option("--drop-path", type=click_type("drop_path"),
                 help="Stochastic depth of the residual nets (compact_resnet*, resnet*): per-sample "
                      "chance of skipping a block's residual branch, rising linearly to this at the "
                      "last block [the model's own: 0, 0.1 for compact_resnet_128]."),
    click.option("--snapshots", type=click_type("snapshots"),
                 help="Keep K epochs' models (spread over the second half) in RUN/snapshots/ for "
                      "`skinzoo ensemble RUN --snapshots`; 0 = off [0]."),
    click.option("--monitor-window", type=click.IntRange(1, 20),
                 help="Pick the best epoch on the mean of the last N epochs' monitor values [1]."),
    click.option("--resize", type=click.Choice(RESIZE_MODES), help="[crop]"),
    click.option("--hair-removal/--no-hair-removal", default=None, help="DullRazor hair removal (cached)."),
    click.option("--cache", type=click.Choice(CACHE_MODES), help="Decoded-image cache [auto]."),
    click.option("--stages", type=click.Choice(STAGES), help="Transfer models: head | finetune | both [head]."),
    click.option("--finetune-blocks", type=click_type("finetune_blocks"), help="Blocks to unfreeze when fine-tuning [2]."),
    click.option("--finetune-epochs", type=click_type("finetune_epochs"), help="Fine-tuning epochs [--epochs]."),
    click.option("--finetune-lr", type=click_type("finetune_lr"), help="Fine-tuning learning rate [lr/10]."),
    click.option("--embed-views", type=click_type("embed_views"), help="Augmented views per image for the embedding cache [1]."),
    click.option("--gpus", help="N | all | 0 [all]."),
    click.option("--precision", type=click.Choice(PRECISIONS), help="[auto: mixed_float16 on GPU, float32 on CPU]"),
    click.option("--cpu-replicas", type=click_type("cpu_replicas"), help="Testing: mirror over N logical CPU devices (0 = off)."),
    click.option("--worker-hosts", help="Multi-worker: host:port,host:port (same list on every host)."),
    click.option("--worker-index", type=click_type("worker_index"), help="Multi-worker: this host's index in --worker-hosts."),
    click.option("--cluster", type=click.Choice(CLUSTERS),
                 help="Multi-worker launcher: slurm | kubernetes | tf-config | none [auto: detected, printed]."),
    click.option("--cluster-port", type=click.IntRange(1024, 65535),
                 help="First worker port on each node for slurm/kubernetes [8888]."),
    click.option("--seed", type=click_type("seed"), help="Seed for every RNG (op determinism on) [0]."),
    click.option("--out", type=click.Path(file_okay=False), help="Where run directories go [runs]."),
    click.option("--tensorboard/--no-tensorboard", default=None, help="Write TensorBoard logs [on]."),
]


def _with_options(func):
    for option in reversed(_OPTIONS):
        func = option(func)
    return func


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file with any of the options.")
@click.option("--resume", type=click.Path(file_okay=False), help="Continue a killed/interrupted run.")
@click.option("--overfit-batch", is_flag=True, default=None, help="Sanity check: can the model fit one batch?")
@_with_options
@pass_settings
def train(settings, config_file, resume, **options):
    """Train a model; writes runs/<date>-<model>-<id>/.

    \b
    Examples:
      skinzoo train --data demo/
      skinzoo train --data HAM10000/ --model resnet152 --gpus 2
      skinzoo train --data HAM10000/ --model efficientnetb0 --weights imagenet --balance smote
      skinzoo train --data HAM10000/ --metadata age,sex,site
      skinzoo train --config runs/X/config.toml
      skinzoo train --resume runs/X
    """
    from skinzoo.train.fit import train as run_training
    from skinzoo.train.prepare import config_from_sources

    options["seed"] = settings.seed_for(options.get("seed"), default=None)  # None: config/default
    from skinzoo.runtime import treat_sigterm_like_ctrl_c

    treat_sigterm_like_ctrl_c()  # SLURM/Kubernetes/timeout: keep the state, print the resume command
    config, run = config_from_sources(config_file, options, resume)
    run_training(config, run=run, echo=(lambda *_: None) if settings.quiet else click.echo)
