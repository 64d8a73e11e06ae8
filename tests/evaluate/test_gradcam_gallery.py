"""skinzoo.evaluate.gradcam_gallery: which images make a correct|misclassified pair, and the pair
files written from a run's split.csv (the `skinzoo gradcam --pair` logic, without a model)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from skinzoo.evaluate.gradcam_gallery import (
    PAIR_GAP,
    Explained,
    display_size,
    known_labels,
    pick_pairs,
    write_pairs,
)
from skinzoo.evaluate.loaded import LoadedModel
from skinzoo.rundir import RunDir


def test_pick_pairs_takes_the_first_correct_and_first_wrong_image_of_each_true_class():
    paths = ["a", "b", "c", "d", "e"]
    labels = {"a": 0, "b": 0, "c": 1, "d": 0, "e": None}
    preds = [1, 0, 1, 0, 0]
    # class 0: correct b (first), wrong a; class 1: only a correct one (c), so no pair
    assert pick_pairs(labels, paths, preds, 2) == {0: (1, 0)}


def _explained(path, predicted_index, colour, classes):
    return Explained(path=path, predicted_index=predicted_index, predicted=classes[predicted_index],
                     probability=0.9, explained=classes[predicted_index], flat=False,
                     overlay=np.full((6, 5, 3), colour, np.uint8))


def test_write_pairs_reads_labels_from_the_run_split(tmp_path):
    classes = ["nv", "mel"]
    images = [tmp_path / f"{n}.jpg" for n in ("x", "y", "z")]
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.split.write_text("image_id,path,label,group,split\n"
                         f"x,{images[0]},mel,g1,test\ny,{images[1]},mel,g2,test\n"
                         f"z,{images[2]},nv,g3,test\n")
    loaded = LoadedModel(model=None, classes=classes, img_size=(8, 8), run=run)
    assert known_labels(loaded, [str(p) for p in images]) == {str(images[0]): 1, str(images[1]): 1,
                                                             str(images[2]): 0}
    explained = [_explained(str(images[0]), 0, 10, classes),  # mel called nv: wrong
                 _explained(str(images[1]), 1, 200, classes),  # mel called mel: right
                 _explained(str(images[2]), 0, 90, classes)]  # nv right, no wrong nv: no pair
    out = tmp_path / "cams"
    out.mkdir()
    assert write_pairs(loaded, explained, out) == 1
    pair = np.asarray(Image.open(out / "pair_mel.png"))
    assert pair.shape == (6, 5 + PAIR_GAP + 5, 3)
    assert (pair[:, :5] == 200).all() and (pair[:, 5:5 + PAIR_GAP] == 255).all()  # correct first
    assert (pair[:, -5:] == 10).all()
    assert not (out / "pair_nv.png").exists()


def test_write_pairs_without_labels_says_so(tmp_path):
    loaded = LoadedModel(model=None, classes=["nv", "mel"], img_size=(8, 8))  # a bare model file
    explained = [_explained("a.jpg", 0, 1, ["nv", "mel"])]
    assert write_pairs(loaded, explained, tmp_path) is None
    assert not list(tmp_path.iterdir())


def test_display_size_enlarges_small_model_inputs_only():
    assert display_size(np.zeros((64, 32, 3), np.float32)).shape == (512, 256, 3)
    big = np.zeros((300, 400, 3), np.float32)
    assert display_size(big) is big
