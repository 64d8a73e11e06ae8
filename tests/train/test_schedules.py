
import pytest

from skinzoo.train.schedules import lr_at, make_schedule


def test_warmup_cosine_rises_then_falls():
    s = make_schedule("warmup-cosine", 1e-3, steps_per_epoch=10, epochs=10, warmup_epochs=1)
    assert lr_at(s, 0) == pytest.approx(1e-5, rel=1e-3)
    assert lr_at(s, 10) == pytest.approx(1e-3, rel=1e-3)  # peak at the end of warm-up
    assert lr_at(s, 55) < lr_at(s, 20) < lr_at(s, 10)
    assert lr_at(s, 100) == pytest.approx(1e-5, rel=0.05)


def test_onecycle_shape():
    s = make_schedule("onecycle", 1e-2, steps_per_epoch=10, epochs=10)
    values = [lr_at(s, i) for i in range(0, 101, 5)]
    peak = max(range(len(values)), key=values.__getitem__)
    assert values[peak] == pytest.approx(1e-2, rel=1e-2)
    assert values[0] == pytest.approx(1e-2 / 25, rel=1e-2)
    assert values[-1] < 1e-5
    assert all(a <= b + 1e-12 for a, b in zip(values[:peak], values[1:peak + 1], strict=True))


def test_step_and_constant_and_cosine():
    s = make_schedule("step", 1.0, steps_per_epoch=4, epochs=10)
    assert lr_at(s, 0) == 1.0
    assert lr_at(s, 25) == pytest.approx(0.1) and lr_at(s, 39) == pytest.approx(0.01)
    assert make_schedule("constant", 0.5, 1, 1) == 0.5
    assert make_schedule("plateau", 0.5, 1, 1) == 0.5
    c = make_schedule("cosine", 1.0, steps_per_epoch=10, epochs=1)
    assert lr_at(c, 0) == pytest.approx(1.0) and lr_at(c, 10) == pytest.approx(0.01)
