"""Schedule formulas against values computed by hand."""

import math

import pytest

from espnet_plugin_intertopk.train.margin_scheduler import (
    ConstantMarginScheduler,
    ExpMarginScheduler,
    LinearMarginScheduler,
)

RAMP = dict(
    initial_margin=0.0, final_margin=0.2, increase_start_epoch=2, fix_start_epoch=6
)


def test_constant():
    s = ConstantMarginScheduler(margin=0.5)
    assert [s.margin(e) for e in (1, 2, 10)] == [0.5, 0.5, 0.5]


@pytest.mark.parametrize(
    "epoch, expected",
    # Ramp over epochs 2..5 (4 epochs); epoch e starts at fraction (e - 2) / 4.
    [(1, 0.0), (2, 0.0), (3, 0.05), (4, 0.1), (5, 0.15), (6, 0.2), (9, 0.2)],
)
def test_linear_per_epoch(epoch, expected):
    s = LinearMarginScheduler(**RAMP, update_per="epoch")
    assert s.margin(epoch, iteration=7, iters_per_epoch=10) == pytest.approx(expected)


@pytest.mark.parametrize(
    "epoch, expected",
    # 0.2 * (1 - 0.001 ** t) with t = 0, 1/4, 1/2, 3/4.
    [
        (1, 0.0),
        (2, 0.0),
        (3, 0.2 * (1 - 0.1778279410)),
        (4, 0.2 * (1 - 0.0316227766)),
        (5, 0.2 * (1 - 0.0056234133)),
        (6, 0.2),
        (7, 0.2),
    ],
)
def test_exp_per_epoch(epoch, expected):
    s = ExpMarginScheduler(**RAMP, update_per="epoch")
    assert s.margin(epoch) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    "epoch, iteration, expected_linear, t",
    [
        (1, 9, 0.0, None),  # before the ramp, even at the end of epoch 1
        (2, 0, 0.0, 0.0),  # first step of the ramp
        (2, 5, 0.025, 0.125),  # half-way through epoch 2: t = 0.5 / 4
        (4, 5, 0.125, 0.625),  # epoch 4, iteration 5 of 10: t = 2.5 / 4
        (5, 9, 0.195, 0.975),  # last step before the fixed phase
        (6, 0, 0.2, None),  # fixed from here on
    ],
)
def test_per_iteration(epoch, iteration, expected_linear, t):
    lin = LinearMarginScheduler(**RAMP)
    exp = ExpMarginScheduler(**RAMP)
    assert lin.margin(epoch, iteration, 10) == pytest.approx(expected_linear)
    if t is None:
        assert exp.margin(epoch, iteration, 10) == expected_linear
    else:
        assert exp.margin(epoch, iteration, 10) == pytest.approx(0.2 * (1 - 0.001**t))


def test_ramp_with_nonzero_initial_margin_and_no_ramp():
    s = LinearMarginScheduler(
        initial_margin=0.1,
        final_margin=0.3,
        increase_start_epoch=1,
        fix_start_epoch=3,
        update_per="epoch",
    )
    assert [s.margin(e) for e in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.3])
    jump = ExpMarginScheduler(
        initial_margin=0.0, final_margin=0.2, increase_start_epoch=3, fix_start_epoch=3
    )
    assert [jump.margin(e, 4, 5) for e in (2, 3)] == [0.0, 0.2]


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(increase_start_epoch=5, fix_start_epoch=3), "fix_start_epoch"),
        (dict(initial_margin=-0.1), "initial_margin"),
        (dict(final_margin=-0.2), "final_margin"),
        (dict(final_margin=math.pi), "final_margin"),
        (dict(increase_start_epoch=0), "increase_start_epoch"),
        (dict(update_per="step"), "update_per"),
    ],
)
def test_bad_configuration(kwargs, word):
    with pytest.raises(ValueError, match=word):
        ExpMarginScheduler(**kwargs)


def test_per_iteration_needs_the_epoch_length():
    with pytest.raises(ValueError, match="iterations per epoch"):
        LinearMarginScheduler(**RAMP).margin(3, 4, None)
