"""Training diagnostics: the head statistics against a slow loop, and the hooks in
ESPnet's real training loop (the trainer hook's in-process driver)."""

import copy
import math

import pytest
import torch

from espnet_plugin_intertopk.loss import effective_mp
from espnet_plugin_intertopk.train.diagnostics import (
    TrainingDiagnostics,
    head_statistics,
    unsupported,
)

from test_trainer_hook import batches, build, one_epoch


def slow_statistics(x, label, weight, K, k):
    """One sample, one class, one sub-center at a time."""
    B, C = x.shape[0], weight.shape[0] // K

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    target_sum, above, compared = 0.0, 0, 0
    votes = {}
    for i in range(B):
        best = [max(cos(x[i], weight[c * K + j]) for j in range(K)) for c in range(C)]
        y = int(label[i])
        target_sum += best[y]
        negatives = sorted((best[c] for c in range(C) if c != y), reverse=True)[:k]
        above += sum(n > best[y] for n in negatives)
        compared += len(negatives)
        sims = [cos(x[i], weight[y * K + j]) for j in range(K)]
        nearest = sims.index(max(sims))
        votes.setdefault(y, [0] * K)[nearest] += 1
    dominant = {c: v.index(max(v)) for c, v in votes.items()}
    return target_sum / B, above / compared, dominant


@pytest.mark.parametrize("K,k", [(1, 3), (3, 2), (2, 6)])
def test_head_statistics_match_a_slow_loop(K, k):
    g = torch.Generator().manual_seed(K * 10 + k)
    C, B, D = 7, 12, 5
    x = torch.randn(B, D, generator=g)
    weight = torch.randn(C * K, D, generator=g)
    label = torch.randint(0, C, (B,), generator=g)
    got = head_statistics(x, label, weight, K, k)
    target, above, dominant = slow_statistics(x, label, weight, K, k)
    assert got["target_cos"] == pytest.approx(target, abs=1e-5)
    assert got["hardneg_above"] == pytest.approx(above, abs=1e-6)
    assert dict(zip(got["classes"].tolist(), got["dominant"].tolist())) == dominant


def test_a_sharded_or_weightless_loss_is_refused():
    class Sharded(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(4, 2))
            self.sharded_weight = object()

    assert "shard" in unsupported(Sharded())
    assert "no class weight" in unsupported(torch.nn.Module())
    model = torch.nn.Module()
    model.loss = Sharded()
    with pytest.raises(ValueError, match="training_diagnostics"):
        TrainingDiagnostics(model)


@pytest.mark.parametrize(
    "extra", [[], ["--loss", "aamsoftmax", "--loss_conf", "{margin: 0.2, scale: 32}"]]
)
def test_statistics_reach_the_reporter_in_espnets_loop(tmp_path, extra):
    diag = ["--training_diagnostics", "true", *extra]
    if not extra:
        diag += ["--margin_scheduler", "constant", "--margin_scheduler_conf",
                 "margin=0.15"]  # fmt: skip
    model, optim, options = build(tmp_path, *diag)
    reporter = one_epoch(model, optim, options, batches(3))
    keys = set(reporter.get_keys2("train"))
    assert {"diag_target_cos", "diag_hardneg_above", "diag_mp_eff",
            "diag_subcenter_switch", "diag_encoder_grad_norm"} <= keys  # fmt: skip
    cos = reporter.get_value("train", "diag_target_cos")
    assert -1 <= cos <= 1
    grad = reporter.get_value("train", "diag_encoder_grad_norm")
    assert math.isfinite(grad) and grad > 0
    mp = reporter.get_value("train", "diag_mp_eff")
    if extra:  # ESPnet's AAM-softmax: one sub-center, no penalty
        assert mp == 0
        assert reporter.get_value("train", "diag_subcenter_switch") == 0
    else:
        assert mp == pytest.approx(effective_mp(model.loss.mp, 0.15), rel=1e-6)


def test_off_by_default_and_no_hook_left_behind(tmp_path):
    model, optim, options = build(tmp_path)
    reporter = one_epoch(model, optim, options, batches(2))
    assert not any(k.startswith("diag_") for k in reporter.get_keys2("train"))
    assert not model.loss._forward_hooks


def test_encoder_norm_is_the_accumulated_step_gradient_unscaled(tmp_path):
    """With accum_grad 2 the norm reported is that of the optimizer step's summed
    gradient (as ESPnet's loop builds it: each micro-batch's loss halved), and a
    scaler's scale is divided out."""
    model, optim, options = build(
        tmp_path, "--training_diagnostics", "true", "--accum_grad", "2"
    )
    data = batches(4)
    reference = copy.deepcopy(model)
    for _, batch in data[:2]:
        (reference(**batch)[0] / 2).backward()
    want = math.sqrt(
        sum(float(p.grad.pow(2).sum()) for p in reference.encoder.parameters())
    )
    reporter = one_epoch(model, optim, options, data)
    got = reporter.get_value("train", "diag_encoder_grad_norm")
    assert got == pytest.approx(want, rel=1e-4)

    class Scaler:
        def is_enabled(self):
            return True

        def get_scale(self):
            return 8.0

    diagnostics = model.__dict__["_plugin_diagnostics"]
    diagnostics.start_epoch(None, Scaler(), 1)
    reference.zero_grad()
    (reference(**data[0][1])[0]).backward()
    for p in model.encoder.parameters():
        p.grad = None
    (model(**data[0][1])[0] * 8.0).backward()
    squares = sum(diagnostics._squares.values())
    unscaled = sum(float(p.grad.pow(2).sum()) for p in model.encoder.parameters())
    assert math.sqrt(squares) == pytest.approx(math.sqrt(unscaled) / 8.0, rel=1e-6)
