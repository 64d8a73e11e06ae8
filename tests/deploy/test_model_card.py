"""Model cards hold only what the run directory records, and say so where nothing is recorded."""

from __future__ import annotations

import pandas as pd

from skinzoo.deploy.model_card import NOT_RECORDED, build_model_card, render_markdown


def test_card_is_filled_from_the_run_and_invents_nothing(deploy_run):
    from skinzoo.evaluate.predict import resolve_model

    loaded = resolve_model(deploy_run)
    card = build_model_card(loaded)
    assert "NOT a diagnostic device" in card["intended_use"]["out_of_scope"]
    split = pd.read_csv(deploy_run / "split.csv", dtype=str)
    counts = card["training_data"]["images_per_split_and_class"]
    assert counts["train"] == split[split["split"] == "train"]["label"].value_counts().sort_index().to_dict()
    assert card["training_data"]["groups_per_split"]["test"] == split[split["split"] == "test"]["group"].nunique()
    assert card["model_details"]["parameters"] == loaded.model.count_params()
    training = card["training"]
    assert training["epochs"] == 6 and training["lr"] == 0.01 and training["epochs_run"] == 6
    assert "weights" not in training and "optimizer" not in training  # not in config.toml: not made up
    assert card["metrics"]["test"] == NOT_RECORDED  # never evaluated on test yet
    assert card["metrics"]["validation"]["balanced_accuracy"] == 0.5
    shares = card["training_data"]["training_metadata"]
    n_train = int((split["split"] == "train").sum())
    assert sum(shares["sex"].values()) == n_train and sum(shares["site"].values()) == n_train
    limits = " ".join(card["limitations"])
    assert "no skin type (Fitzpatrick)" in limits and "No test-split evaluation was recorded" in limits
    rare_sites = [k for k, v in shares["site"].items() if k != "unknown" and v < 0.05 * n_train]
    assert all(site in limits for site in rare_sites)
    md = render_markdown(card)
    for heading in ("## Model details", "## Intended use", "## Training data", "## Metrics",
                    "## Known limitations"):
        assert heading in md
    assert "**Not a diagnostic device.**" in md


def test_binary_test_metrics_show_sensitivity_and_specificity(deploy_run):
    from skinzoo.evaluate.predict import resolve_model

    evaluation = {"split": "test", "n": 40, "accuracy": 0.8, "balanced_accuracy": 0.75,
                  "ci": {"balanced_accuracy": [0.6, 0.9]},
                  "binary": {"threshold": 0.31, "threshold_method": "youden fitted on validation",
                             "sensitivity": 0.7, "specificity": 0.8, "ppv": 0.5, "npv": 0.9}}
    card = build_model_card(resolve_model(deploy_run), evaluation=evaluation)
    assert card["metrics"]["test"]["binary"]["sensitivity"] == 0.7
    md = render_markdown(card)
    assert "Threshold 0.310 (youden fitted on validation): sensitivity 0.700, specificity 0.800" in md
    assert "| balanced_accuracy | 0.750 | 0.600–0.900 |" in md
