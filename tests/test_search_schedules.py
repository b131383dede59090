"""Learning-rate schedules at their key points (method.md §3, PULSE; ILO)."""

import pytest

from rls.search.schedules import constant, cosine, get_schedule, linear1cycledrop


def test_linear1cycledrop_key_points():
    T = 500
    assert linear1cycledrop(0, T) == pytest.approx(0.1)
    assert linear1cycledrop(225, T) == pytest.approx(1.0)  # 45%
    assert linear1cycledrop(450, T) == pytest.approx(0.1)  # 90%
    assert linear1cycledrop(T, T) == pytest.approx(0.001)  # end of the drop
    assert linear1cycledrop(112.5, T) == pytest.approx(0.55)  # linear rise
    assert linear1cycledrop(475, T) == pytest.approx((0.1 + 0.001) / 2)  # linear drop
    values = [linear1cycledrop(s, T) for s in range(T)]
    assert max(values) == pytest.approx(1.0)
    assert min(values) > 0.001


def test_cosine_ramps_like_the_stylegan_projector():
    T = 100
    assert cosine(0, T) == 0.0
    assert cosine(5, T) == pytest.approx(1.0)  # end of the 5% warm-up
    assert cosine(2, T) == pytest.approx(0.4)
    assert cosine(25, T) == pytest.approx(1.0)  # ramp-down starts at 25%
    assert cosine(T, T) == pytest.approx(0.0)
    assert cosine(125, 200) == pytest.approx(0.5)  # half-way down the cosine


def test_constant_and_lookup():
    assert constant(7, 10) == 1.0
    assert get_schedule("linear1cycledrop") is linear1cycledrop
    custom = lambda s, n: 0.5  # noqa: E731
    assert get_schedule(custom) is custom
    with pytest.raises(KeyError, match="unknown schedule"):
        get_schedule("warmup")
