"""The CPU in full: training images/s and CPU use beside each model's step limit (issue 17).

For each model, input size, precision (float32, mixed_bfloat16) and op determinism (on, off),
two sides are measured, each in its own fresh Python process:

- ``pipeline``: ``model.fit`` on skinzoo's real training pipeline (``make_dataset`` with
  ``training=True``, ``cache="memory"``, the ``dermoscopy`` augmentation, batch 32) over real
  HAM10000 images (or synthetic lesions from ``skinzoo.data.synth`` when the folder is absent);
- ``synthetic``: the same ``model.fit`` on one in-memory batch repeated: the model's step limit,
  with no input pipeline in the way. This side also times inference (``predict_on_batch``).

Plus variants (float32, determinism on), each compared with the plain side it changes:

- ``synthetic+xla``: ``compile(jit_compile=True)``, training and inference;
- ``synthetic+spe8``: ``compile(steps_per_execution=8)``: 8 steps per call into the graph, so the
  Python and per-step launch overhead between steps is paid once per 8;
- ``synthetic+b64``: batch 64 instead of 32: whether the ops are too small at batch 32 to keep
  both cores busy (a training setting, not a free lever);
- ``pipeline+metrics``: ``skinzoo train``'s training metrics compiled in (accuracy, balanced
  accuracy, 7-label AUC, updated every step);
- ``pipeline+callbacks``: ``skinzoo train``'s per-step callbacks (NaN guard, Ctrl-C handler, the
  recipe's weight average with its graph call per step, the progress line's bookkeeping): any
  callback with a per-batch hook makes Keras convert the step's logs to Python floats and run
  the hooks between steps instead of in its background thread;
- ``pipeline+recipe``: both.

Why one process per configuration: in one process, after a mixed_bfloat16 or jit_compile model
had trained, a following float32 model trained at half speed (93 against 186 img/s, 94% CPU),
so a shared process would measure the order, not the configuration. Every side is timed once per
round and the sides alternate (which goes first flips every round and every configuration); each
ratio is the median of the per-round ratios with its min-max in ``ratio_ranges``.

Inside a process: ``fit`` runs 1 + E epochs of the same number of steps; epoch 1 is the warm-up
(graph tracing; on the pipeline side it also decodes every image into the memory cache) and is
not counted. Images/s and CPU % (``time.process_time`` delta, all threads, over the wall-clock
delta, x100: 200% is both cores busy) come from a callback (epoch begin / end, and the start of
step ``SKIP_STEPS``; no per-step end hook, which would change how Keras runs callbacks):

- ``train_*``: the steady state, from step ``SKIP_STEPS`` to the epoch's end;
- ``epoch_*``: whole epochs, and ``epoch_start_seconds``, what an epoch costs beyond its steps:
  every epoch makes a new iterator, so the pipeline refills its shuffle buffer (every cached
  image) and tf.data's autotuner ramps its parallelism up again. A real HAM10000 epoch (~220
  steps) amortises this; the short epochs here would not, hence the steady-state figures.

The process reports the medians over its E epochs.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.rounds import ratio_summary
from skinzoo.errors import SkinzooError
from skinzoo.runtime import usable_cores

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "ham10000"
BATCH = 32
NUM_CLASSES = 7
SEED = 0
MARK = "CPU_USE_RESULT "  # the child's result line on stdout (TensorFlow's noise goes to stderr)
# Images per epoch for each (model, size): about 5-10 s of training per epoch on an idle 2-core
# EPYC (so per-epoch costs such as iterator creation do not dominate) and whole batches only.
# Estimated from the models' multiply-accumulates and compact_resnet's ~190 img/s at 64 px.
IMAGES_PER_EPOCH = {
    ("compact_resnet", 64): 1280, ("compact_resnet", 128): 320,
    ("resnet18_small", 64): 1024, ("resnet18_small", 128): 256,
    ("efficientnetb0", 64): 640, ("efficientnetb0", 128): 192,
    ("resnet50", 64): 320, ("resnet50", 128): 96,
}
FULL_MODELS = ("compact_resnet", "resnet18_small", "efficientnetb0", "resnet50")
FULL_SIZES = (64, 128)
PRECISIONS = ("float32", "mixed_bfloat16")
SHORT = {"float32": "f32", "mixed_bfloat16": "bf16", True: "det", False: "nodet"}
# variant name -> the side it changes and what it changes there
VARIANTS = {
    "xla": {"side": "synthetic", "jit": True},
    "spe8": {"side": "synthetic", "steps_per_execution": 8},
    "b64": {"side": "synthetic", "batch": 64},
    "metrics": {"side": "pipeline", "metrics": True},
    "callbacks": {"side": "pipeline", "callbacks": True},
    "recipe": {"side": "pipeline", "metrics": True, "callbacks": True},
}
TARGET_VS_LIMIT = ">= 0.8"
SKIP_STEPS = 4  # the steady state of an epoch starts at this step


# --- the configurations ---------------------------------------------------------------------------

def selected_grid(models, sizes, precisions, determinism) -> tuple[list[tuple], list[tuple]]:
    """A part of the full grid (``python -m bench.bench_cpu_use --sizes 128 ...``): every
    combination of the given values, XLA for each (model, size), no other levers; for measuring
    a slice of the ~2.5-hour full grid on its own."""
    train = [(m, s, p, d) for m in models for s in sizes for p in precisions for d in determinism]
    return train, [("xla", m, s) for m in models for s in sizes]


def grid(quick: bool) -> tuple[list[tuple], list[tuple]]:
    """(training configurations (model, size, precision, deterministic),
    variants (variant, model, size)).

    Quick (under 10 minutes on 2 idle cores): compact_resnet and resnet18_small at 64 px in both
    precisions with determinism on (skinzoo train's default with a seed), compact_resnet float32
    with it off too; XLA, steps_per_execution and skinzoo train's metrics + callbacks on
    compact_resnet at 64 px (full mode adds XLA for every model and size, the metrics and the
    callbacks one at a time, and batch 64).
    """
    if quick:
        train = [(m, 64, p, True) for m in ("compact_resnet", "resnet18_small") for p in PRECISIONS]
        train.insert(1, ("compact_resnet", 64, "float32", False))
        return train, [(v, "compact_resnet", 64) for v in ("xla", "spe8", "recipe")]
    train = [(m, s, p, d) for m in FULL_MODELS for s in FULL_SIZES for p in PRECISIONS
             for d in (True, False)]
    levers = [(v, "compact_resnet", 64) for v in ("spe8", "b64", "metrics", "callbacks", "recipe")]
    return train, [("xla", m, s) for m in FULL_MODELS for s in FULL_SIZES] + levers


def key(model: str, size: int, precision: str | None = None, deterministic: bool | None = None) -> str:
    parts = [model, str(size)]
    parts += [SHORT[precision]] if precision is not None else []
    parts += [SHORT[deterministic]] if deterministic is not None else []
    return " ".join(parts)


def process_jobs(train: list[tuple], variants: list[tuple], quick: bool, data: str) -> list[dict]:
    """Every process of one round, as the child's JSON configuration (pairs kept adjacent)."""
    jobs = []
    for model, size, precision, deterministic in train:
        for side in ("pipeline", "synthetic"):
            jobs.append(dict(model=model, size=size, precision=precision,
                             deterministic=deterministic, side=side, variant="", epochs=2,
                             images=images_per_epoch(model, size, quick), data=data))
    for variant, model, size in variants:
        # float32, determinism on: what `skinzoo train --seed` runs; the grid holds its plain twin
        jobs.append(dict(model=model, size=size, precision="float32", deterministic=True,
                         side=VARIANTS[variant]["side"], variant=variant, epochs=2,
                         images=images_per_epoch(model, size, quick), data=data))
    return jobs


def images_per_epoch(model: str, size: int, quick: bool) -> int:
    n = IMAGES_PER_EPOCH.get((model, size), 0)
    # at least 4 steady-state steps after the SKIP_STEPS of every epoch
    return max((SKIP_STEPS + 4) * BATCH, n * 2 // 5 // BATCH * BATCH if quick else n)


def job_name(job: dict) -> str:
    side = job["side"] + (f"+{job['variant']}" if job["variant"] else "")
    return f"{side} {key(job['model'], job['size'], job['precision'], job['deterministic'])}"


def ordered(jobs: list[dict], round_no: int) -> list[dict]:
    """The round's order: within each adjacent pipeline/synthetic pair, who goes first flips
    with the round and with the pair's position (so no side always follows the other)."""
    out, i, pair = [], 0, 0
    while i < len(jobs):
        if (i + 1 < len(jobs) and jobs[i]["side"] == "pipeline" and not jobs[i]["variant"]
                and not jobs[i + 1]["variant"]):
            two = jobs[i:i + 2]
            out += two[::-1] if (round_no + pair) % 2 else two
            i, pair = i + 2, pair + 1
        else:
            out.append(jobs[i])
            i += 1
    return out


# --- one process: one configuration ---------------------------------------------------------------

def measure(job: dict) -> dict:
    """Inside the child: train 1 + E epochs of one configuration; on the synthetic side also time
    inference. Returns images/s and CPU % (medians over the E timed epochs)."""
    from skinzoo.runtime import set_seed, tf

    tf()
    import keras

    from skinzoo.models.registry import build_model
    from skinzoo.train.metrics import training_metrics

    variant = VARIANTS.get(job["variant"], {})
    batch = variant.get("batch", BATCH)
    set_seed(SEED, job["deterministic"])
    keras.mixed_precision.set_global_policy(job["precision"])
    model = build_model(job["model"], NUM_CLASSES, input_shape=job["size"])
    model.compile(optimizer=keras.optimizers.Adam(1e-4),
                  loss=keras.losses.CategoricalCrossentropy(), jit_compile=variant.get("jit", False),
                  steps_per_execution=variant.get("steps_per_execution", 1),
                  metrics=training_metrics(NUM_CLASSES) if variant.get("metrics") else None)
    steps = job["images"] // batch
    if job["side"] == "pipeline":
        dataset = pipeline_dataset(job["data"], job["images"], job["size"])
    else:
        images, targets = synthetic_batch(job["size"], batch)
        dataset = tf().data.Dataset.from_tensors((images, targets)).repeat(steps)
    skip = job.get("skip_steps", SKIP_STEPS)  # tests run tiny epochs
    if steps <= skip:
        raise ValueError(f"{steps} steps per epoch: more than {skip} needed")
    marks = []  # per epoch: {"begin"/"steady"/"end": (wall, cpu)}, "step": where steady begins

    def now():
        return time.perf_counter(), time.process_time()

    def epoch_begins(epoch, logs=None):
        marks.append({"begin": now()})

    def step_begins(step, logs=None):
        # with steps_per_execution the hook sees every 8th step only: the first one >= SKIP_STEPS
        if "steady" not in marks[-1] and step >= skip:
            marks[-1].update(steady=now(), step=step)

    def epoch_ends(epoch, logs=None):
        marks[-1]["end"] = now()

    clock = keras.callbacks.LambdaCallback(on_epoch_begin=epoch_begins, on_epoch_end=epoch_ends,
                                           on_train_batch_begin=step_begins)
    extra = per_step_callbacks(1 + job["epochs"]) if variant.get("callbacks") else []
    load = os.getloadavg()[0]
    model.fit(dataset, epochs=1 + job["epochs"], callbacks=[clock, *extra], verbose=0)
    result = epoch_figures(marks[1:], steps, batch)
    result.update(steps_per_epoch=steps, load_average=load)
    if job["side"] == "synthetic":
        result.update(predict_rate(model, images, max(4, steps * batch // BATCH // 2)))
    return result


def epoch_figures(marks: list[dict], steps: int, batch: int) -> dict:
    """Medians over the timed epochs: steady-state and whole-epoch images/s and CPU %, and the
    seconds an epoch costs beyond its steps (its start: new iterator, shuffle buffer, ramp-up)."""
    def rate(a, b, n_steps):
        wall, cpu = b[0] - a[0], b[1] - a[1]
        return n_steps * batch / wall, 100 * cpu / wall

    steady = [rate(m["steady"], m["end"], steps - m["step"]) for m in marks]
    whole = [rate(m["begin"], m["end"], steps) for m in marks]
    start = [(m["end"][0] - m["begin"][0]) - steps * batch / ips
             for m, (ips, _) in zip(marks, steady, strict=True)]
    return {"train_ips": statistics.median(r for r, _ in steady),
            "train_cpu_percent": statistics.median(c for _, c in steady),
            "epoch_ips": statistics.median(r for r, _ in whole),
            "epoch_cpu_percent": statistics.median(c for _, c in whole),
            "epoch_start_seconds": statistics.median(start)}


def per_step_callbacks(epochs: int) -> list:
    """The callbacks ``skinzoo train`` runs after every training step (skinzoo.train.parts.
    standard_callbacks), with the recipe's weight average; their epoch-level file writing
    (history, checkpoints, backups) is left out, the progress line kept silent."""
    from skinzoo.train import callbacks as cb
    from skinzoo.train.abort import AbortState
    from skinzoo.train.progress import TrainProgress

    abort = AbortState()
    return [cb.NaNGuard(abort), cb.InterruptHandler(abort), cb.WeightAverage(0.999),
            TrainProgress(epochs, BATCH, echo=lambda *_: None, enabled=False, abort=abort),
            cb.EpochPrinter(epochs, echo=lambda *_: None, abort=abort)]


def pipeline_dataset(data: str, n: int, size: int):
    """skinzoo's training stream over ``n`` images of ``data``: memory cache + dermoscopy
    augmentation, shuffled, batch 32 (the recipe's pipeline)."""
    import numpy as np
    import pandas as pd

    from skinzoo.data.pipeline import make_dataset

    root = Path(data)
    table = pd.read_csv(root / "HAM10000_metadata.csv")
    table["path"] = [str(root / "images" / f"{i}.jpg") for i in table["image_id"]]
    table = table[[Path(p).exists() for p in table["path"]]].sample(n=n, random_state=SEED)
    classes = sorted(table["dx"].unique())
    labels = np.array([classes.index(c) for c in table["dx"]])
    return make_dataset(table["path"].tolist(), labels, NUM_CLASSES, size, BATCH, training=True,
                        augment="dermoscopy", seed=SEED, cache="memory")


def synthetic_batch(size: int, batch: int):
    from skinzoo.models.speed import synthetic_batch as batch_of

    return batch_of(batch, size, SEED)


def predict_rate(model, images, steps: int) -> dict:
    """Inference images/s and CPU % over ``steps`` calls after one untimed (tracing) call."""
    model.predict_on_batch(images)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        model.predict_on_batch(images)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return {"predict_ips": steps * len(images) / wall, "predict_cpu_percent": 100 * cpu / wall}


def run_child(job: dict, timeout: float) -> dict:
    """One configuration in a fresh interpreter; an error or timeout comes back as ``error``."""
    cmd = [sys.executable, "-m", "bench.bench_cpu_use", "--child", json.dumps(job)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARK)]
    if not lines:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1][len(MARK):])


# --- summarising rounds ---------------------------------------------------------------------------

def summarise(results: dict, train: list[tuple], variants: list[tuple], cores: int):
    """figures (medians per process configuration), ratios, their ranges, targets.

    ``results[job name]`` is a list with one child result per round (a dict, maybe ``error``).
    """
    def values(name, field):
        return [r.get(field) for r in results.get(name, [])]

    figures, ratios, ranges, targets = {}, {}, {}, {}

    def add(name, numerators, denominators, target=None):
        summary = ratio_summary(numerators, denominators)
        if summary is not None:
            ratios[name], ranges[name] = summary
            if target:
                targets[name] = target

    for name in results:
        for field in ("train_ips", "train_cpu_percent", "epoch_ips", "epoch_cpu_percent",
                      "epoch_start_seconds", "predict_ips", "predict_cpu_percent"):
            got = [v for v in values(name, field) if v is not None]
            if got:
                figures[f"{field} {name}"] = round(statistics.median(got), 1)
    ones = [1.0] * max((len(r) for r in results.values()), default=0)
    cpu_target = f">= {90 * cores}"  # 180% on 2 cores: the target, scaled to the machine
    for model, size, precision, det in train:
        k = key(model, size, precision, det)
        pipe, synth = f"pipeline {k}", f"synthetic {k}"
        add(f"train_vs_limit {k}", values(pipe, "train_ips"), values(synth, "train_ips"),
            TARGET_VS_LIMIT)
        # whole short epochs, their start included (no target: a real epoch is ~220 steps)
        add(f"epoch_vs_limit {k}", values(pipe, "epoch_ips"), values(synth, "epoch_ips"))
        # CPU % is itself a ratio (CPU time / wall); the per-round values and their spread
        add(f"cpu_percent_train {k}", values(pipe, "train_cpu_percent"), ones, cpu_target)
        add(f"cpu_percent_limit {k}", values(synth, "train_cpu_percent"), ones)
        if precision == "mixed_bfloat16":
            twin = key(model, size, "float32", det)
            add(f"bf16_vs_f32_limit {key(model, size, None, det)}", values(synth, "train_ips"),
                values(f"synthetic {twin}", "train_ips"))
            add(f"bf16_vs_f32_train {key(model, size, None, det)}", values(pipe, "train_ips"),
                values(f"pipeline {twin}", "train_ips"))
            add(f"bf16_vs_f32_predict {key(model, size, None, det)}", values(synth, "predict_ips"),
                values(f"synthetic {twin}", "predict_ips"))
        if not det:
            twin = key(model, size, precision, True)
            add(f"nodet_vs_det_train {key(model, size, precision)}", values(pipe, "train_ips"),
                values(f"pipeline {twin}", "train_ips"))
    for variant, model, size in variants:
        k, side = key(model, size, "float32", True), VARIANTS[variant]["side"]
        # inference only changes with XLA (the levers change the training step)
        fields = ("train_ips", "predict_ips") if variant == "xla" else ("train_ips",)
        for field in fields:
            add(f"{variant}_vs_default_{field.removesuffix('_ips')} {key(model, size)}",
                values(f"{side}+{variant} {k}", field), values(f"{side} {k}", field))
    return figures, ratios, ranges, targets


# --- the benchmark --------------------------------------------------------------------------------

def synthetic_lesions(folder: Path, n: int) -> str:
    """HAM10000-shaped folder of drawn lesions (200 px) when the real images are absent."""
    from skinzoo.data.synth import make_synthetic_dataset

    make_synthetic_dataset(folder, n_images=n, size=200, seed=SEED)
    return str(folder)


def run(quick: bool = False, data: str | None = None, selection: dict | None = None,
        rounds: int | None = None) -> dict:
    """``selection``: ``selected_grid``'s keyword arguments, for a slice of the full grid."""
    train, variants = selected_grid(**selection) if selection else grid(quick)
    rounds = rounds or (2 if quick else 3)
    timeout = 600 if quick else 1800
    cores = usable_cores()
    data_path = Path(data) if data else DEFAULT_DATA
    with tempfile.TemporaryDirectory(prefix="skinzoo-bench-cpu-use-") as scratch:
        if (data_path / "HAM10000_metadata.csv").exists():
            source, data = "HAM10000 (200x150 JPEG copy)", str(data_path)
        else:
            source = f"synthetic lesions (no HAM10000 at {data_path})"
            data = synthetic_lesions(Path(scratch), max(IMAGES_PER_EPOCH.values()))
        jobs = process_jobs(train, variants, quick, data)
        results = {job_name(j): [] for j in jobs}
        errors = []
        started = time.perf_counter()
        for r in range(rounds):
            for job in ordered(jobs, r):
                got = run_child(job, timeout)
                results[job_name(job)].append(got)
                if "error" in got:
                    errors.append(f"round {r + 1}, {job_name(job)}: {got['error']}")
                print(f"  cpu_use round {r + 1}/{rounds} {job_name(job)}: "
                      + (got.get("error") or f"{got['train_ips']:.1f} img/s train, "
                                              f"{got['train_cpu_percent']:.0f}% CPU"),
                      file=sys.stderr, flush=True)
    figures, ratios, ranges, targets = summarise(results, train, variants, cores)
    loads = [r["load_average"] for rs in results.values() for r in rs if "load_average" in r]
    figures = {"rounds": rounds, "processes": rounds * len(jobs), "batch_size": BATCH,
               "cores": cores, "seconds_all_processes": round(time.perf_counter() - started, 1),
               "load_average_median": round(statistics.median(loads), 2) if loads else None,
               **figures}
    notes = (f"Images: {source}. Each configuration (model, size, precision, op determinism; "
             "side) trains in its own fresh process: model.fit, batch 32, Adam, cross-entropy, "
             "random weights; 1 warm-up epoch (tracing; the pipeline side decodes into its "
             "memory cache) then 2 timed epochs, median per process; train_* from step "
             f"{SKIP_STEPS} to the epoch's end (steady state), epoch_* whole epochs, "
             "epoch_start_seconds what an epoch costs beyond its steps. pipeline = "
             "make_dataset(training=True, cache='memory', augment='dermoscopy'); synthetic = one "
             "in-memory batch repeated (the step limit); inference = predict_on_batch on the "
             "synthetic side. CPU % = process CPU time (all threads) / wall x 100. Ratios: median "
             f"over {rounds} rounds of per-round ratios (ratio_ranges: min-max); within a round the "
             "pipeline/synthetic order flips per configuration and per round. Variants of the "
             "side they change (float32, determinism on) vs the plain one: xla = "
             "compile(jit_compile=True), spe8 = compile(steps_per_execution=8), b64 = batch 64 "
             "(synthetic side); metrics = skinzoo train's training metrics, callbacks = its "
             "per-step callbacks with the 0.999 weight average, recipe = both (pipeline side)."
             + (" Errors: " + "; ".join(errors) if errors else ""))
    return {"name": "cpu_use", "baseline": "the model's step limit (synthetic in-memory batches)",
            "figures": figures, "ratios": ratios, "ratio_ranges": ranges, "targets": targets,
            "notes": notes}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        try:
            outcome = measure(json.loads(sys.argv[2]))
        except SkinzooError as err:  # a bad configuration (unknown model, size too small): one line
            outcome = {"error": f"{type(err).__name__}: {err.message}"}
        print(MARK + json.dumps(outcome), flush=True)
    else:
        import argparse

        parser = argparse.ArgumentParser(description=__doc__,
                                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--quick", action="store_true")
        parser.add_argument("--data", default=None, help="HAM10000 folder")
        parser.add_argument("--rounds", type=int, default=None)
        # a slice of the full grid: every combination of the values given (comma-separated)
        parser.add_argument("--models", default=None, help=f"e.g. {','.join(FULL_MODELS)}")
        parser.add_argument("--sizes", default=None, help="e.g. 64,128")
        parser.add_argument("--precisions", default=None, help=f"e.g. {','.join(PRECISIONS)}")
        parser.add_argument("--determinism", default=None, help="on,off")
        args = parser.parse_args()
        parts = (args.models, args.sizes, args.precisions, args.determinism)
        selection = None
        if any(parts):
            selection = {
                "models": (args.models or ",".join(FULL_MODELS)).split(","),
                "sizes": [int(v) for v in (args.sizes or ",".join(map(str, FULL_SIZES))).split(",")],
                "precisions": (args.precisions or ",".join(PRECISIONS)).split(","),
                "determinism": [v == "on" for v in (args.determinism or "on,off").split(",")],
            }
        print(json.dumps(run(args.quick, args.data, selection, args.rounds), indent=2))
