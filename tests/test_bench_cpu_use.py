"""bench/bench_cpu_use.py's bookkeeping (no TensorFlow): the round order and the ratio summary."""

from __future__ import annotations

import pytest

from bench.bench_cpu_use import (
    grid,
    job_name,
    ordered,
    process_jobs,
    run_child,
    selected_grid,
    summarise,
    usable_cores,
)


def test_each_pair_alternates_which_side_goes_first_over_rounds_and_pairs():
    train, variants = grid(quick=True)
    jobs = process_jobs(train, variants, quick=True, data="unused")
    assert len(jobs) == 2 * len(train) + len(variants)
    first = [[j["side"] for j in ordered(jobs, r)][0:4] for r in (0, 1)]
    assert first[0] == ["pipeline", "synthetic", "synthetic", "pipeline"]
    assert first[1] == ["synthetic", "pipeline", "pipeline", "synthetic"]
    assert sorted(map(job_name, ordered(jobs, 1))) == sorted(map(job_name, jobs))  # nothing lost


def test_a_slice_of_the_grid_is_every_combination_given_with_xla_per_model_and_size():
    train, variants = selected_grid(["efficientnetb0", "resnet50"], [128], ["float32", "mixed_bfloat16"],
                                    [True])
    assert len(train) == 4 and {t[1] for t in train} == {128} and all(t[3] for t in train)
    assert variants == [("xla", "efficientnetb0", 128), ("xla", "resnet50", 128)]
    jobs = process_jobs(train, variants, quick=False, data="unused")
    # at least SKIP_STEPS + 4 whole batches per epoch, whatever the table says (96 for resnet50)
    assert {j["images"] for j in jobs if j["model"] == "resnet50"} == {256}


def test_ratios_are_medians_of_per_round_ratios_with_their_range_and_failed_rounds_skipped():
    train = [("compact_resnet", 64, "float32", True), ("compact_resnet", 64, "mixed_bfloat16", True)]
    variants = [("xla", "compact_resnet", 64), ("spe8", "compact_resnet", 64),
                ("callbacks", "compact_resnet", 64)]
    results = {
        "pipeline compact_resnet 64 f32 det": [{"train_ips": 90, "train_cpu_percent": 170},
                                               {"train_ips": 80, "train_cpu_percent": 190},
                                               {"error": "timed out"}],
        "synthetic compact_resnet 64 f32 det": [{"train_ips": 100, "train_cpu_percent": 195,
                                                 "predict_ips": 300}] * 3,
        "pipeline compact_resnet 64 bf16 det": [{"train_ips": 120, "train_cpu_percent": 185}] * 3,
        "synthetic compact_resnet 64 bf16 det": [{"train_ips": 150, "train_cpu_percent": 190,
                                                  "predict_ips": 330}] * 3,
        "synthetic+xla compact_resnet 64 f32 det": [{"train_ips": 80, "predict_ips": 600}] * 3,
        "synthetic+spe8 compact_resnet 64 f32 det": [{"train_ips": 120, "predict_ips": 300}] * 3,
        "pipeline+callbacks compact_resnet 64 f32 det": [{"train_ips": 68, "train_cpu_percent": 130},
                                                         {"error": "exit 1"}, {"error": "exit 1"}],
    }
    figures, ratios, ranges, targets = summarise(results, train, variants, cores=2)
    k = "compact_resnet 64 f32 det"
    assert ratios[f"train_vs_limit {k}"] == 0.85 and ranges[f"train_vs_limit {k}"] == [0.8, 0.9]
    assert targets[f"train_vs_limit {k}"] == ">= 0.8"
    assert ratios[f"cpu_percent_train {k}"] == 180 and targets[f"cpu_percent_train {k}"] == ">= 180"
    assert ratios["bf16_vs_f32_limit compact_resnet 64 det"] == 1.5
    assert ratios["xla_vs_default_train compact_resnet 64"] == 0.8
    assert ratios["xla_vs_default_predict compact_resnet 64"] == 2.0
    assert ratios["spe8_vs_default_train compact_resnet 64"] == 1.2
    assert "spe8_vs_default_predict compact_resnet 64" not in ratios  # the lever is training-only
    # a pipeline-side variant is compared with the plain pipeline side; one round ran
    assert ratios["callbacks_vs_default_train compact_resnet 64"] == 0.76
    assert figures[f"train_cpu_percent pipeline+callbacks {k}"] == 130
    assert figures[f"train_ips pipeline {k}"] == 85


@pytest.mark.slow
def test_one_configuration_runs_in_its_own_process_and_a_failure_is_a_result(synth_dir):
    # skinzoo train's per-step callbacks ride along: the variant with the most moving parts
    job = dict(model="simple_cnn", size=32, precision="float32", deterministic=True,
               side="pipeline", variant="callbacks", epochs=1, images=128, skip_steps=1,
               data=str(synth_dir))
    got = run_child(job, timeout=120)
    assert "error" not in got, got
    assert got["steps_per_epoch"] == 4 and got["train_ips"] > 0 and got["epoch_ips"] > 0
    assert 0 < got["train_cpu_percent"] <= 100 * usable_cores() + 5
    assert "predict_ips" not in got  # inference is timed on the synthetic side only
    failed = run_child({**job, "model": "no_such_model"}, timeout=120)
    assert "no_such_model" in failed["error"]


def test_epoch_figures_separate_the_steady_state_from_the_epochs_start():
    from bench.bench_cpu_use import epoch_figures

    # 20 steps of 32 images: 1 s from the epoch's begin to step 4, then 16 steps in 2 s at
    # 1.8 CPU-seconds per second (so 4 steps take 0.5 s and the epoch's start costs 0.5 s)
    marks = [{"begin": (10.0, 5.0), "steady": (11.0, 6.0), "step": 4, "end": (13.0, 9.6)}]
    got = epoch_figures(marks, steps=20, batch=32)
    assert got["train_ips"] == 16 * 32 / 2 and round(got["train_cpu_percent"], 6) == 180
    assert got["epoch_ips"] == 20 * 32 / 3 and got["epoch_cpu_percent"] == pytest.approx(460 / 3)
    assert got["epoch_start_seconds"] == pytest.approx(0.5)  # 3 s for 20 steps of 0.125 s
