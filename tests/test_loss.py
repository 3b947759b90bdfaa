"""The loss against a float64 reference written from its definition and against
ESPnet's copy."""

import math
import random

import pytest
import torch
import torch.nn.functional as F
from espnet2.spk.loss.aamsoftmax_subcenter_intertopk import (
    ArcMarginProduct_intertopk_subcenter as EspnetLoss,
)

from espnet_plugin_intertopk import ArcMarginProduct_intertopk_subcenter as PluginLoss
from espnet_plugin_intertopk.espnet_compat import returns_tuple_for
from espnet_plugin_intertopk.kernels import block_ops, blocks, function

from conftest import needs_cpu_compiler
from reference import reference_loss, reference_predictions

RTOL = 1e-5
# The recipe's loss settings on a small problem.
TYPICAL = dict(B=8, nclasses=20, nout=8, K=3, k_top=5, margin=0.2, mp=0.06,
               easy_margin=False, do_lm=False, scale=32.0)  # fmt: skip


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def random_configs(n, seed=0):
    rng = random.Random(seed)
    for _ in range(n):
        C = rng.randint(2, 40)
        yield dict(
            B=rng.randint(1, 12),
            nclasses=C,
            nout=rng.choice([4, 8, 16]),
            K=rng.randint(1, 4),
            k_top=rng.randint(0, min(6, C - 1)),
            margin=rng.choice([0.0, 0.0005, rng.uniform(0.01, 0.6)]),
            mp=rng.uniform(0.0, 0.12),
            easy_margin=rng.random() < 0.4,
            do_lm=rng.random() < 0.2,
            scale=rng.uniform(8.0, 64.0),
        )


def build(cfg, **extra):
    kw = {k: v for k, v in cfg.items() if k != "B"}
    torch.manual_seed(0)
    plugin = PluginLoss(**kw, return_accuracy=True, **extra)
    espnet = EspnetLoss(**kw)
    espnet.weight.data.copy_(plugin.weight.data)
    espnet.update(cfg["margin"])
    x = torch.randn(cfg["B"], cfg["nout"])
    y = torch.randint(0, cfg["nclasses"], (cfg["B"],))
    return plugin, espnet, x, y


def loss_and_grads(module, x, y):
    xg = x.clone().requires_grad_(True)
    module.weight.grad = None
    out = module(xg, y)
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    return loss.detach(), xg.grad, module.weight.grad.clone()


def reference_of(plugin, cfg, x, y):
    xg = x.double().requires_grad_(True)
    w = plugin.weight.detach().double().requires_grad_(True)
    loss = reference_loss(
        xg,
        w,
        y,
        nclasses=cfg["nclasses"],
        K=cfg["K"],
        scale=cfg["scale"],
        margin=cfg["margin"],
        easy_margin=cfg["easy_margin"],
        mp=plugin.mp,
        k_top=plugin.k_top,
    )
    loss.backward()
    return loss.detach(), xg.grad, w.grad


@pytest.mark.parametrize(
    "cfg", list(random_configs(40)), ids=lambda c: str(sorted(c.items()))
)
def test_matches_reference_and_espnet(cfg):
    plugin, espnet, x, y = build(cfg)
    got = loss_and_grads(plugin, x, y)
    ref = reference_of(plugin, cfg, x, y)
    esp = loss_and_grads(espnet, x, y)
    for g, r, e, what in zip(got, ref, esp, ("loss", "input grad", "weight grad")):
        assert rel_err(g, r) < RTOL, f"{what} vs float64 reference"
        assert rel_err(g, e) < RTOL, f"{what} vs ESPnet after update()"


@pytest.mark.parametrize("chunk", [1, 2, 5, 16])
@pytest.mark.parametrize(
    "cfg", list(random_configs(6, seed=1)), ids=lambda c: str(sorted(c.items()))
)
def test_chunked_matches_dense(cfg, chunk):
    dense, _, x, y = build(cfg)
    chunked = PluginLoss(
        **{k: v for k, v in cfg.items() if k != "B"}, class_chunk_size=chunk
    )
    chunked.weight.data.copy_(dense.weight.data)
    chunked.return_accuracy = True
    a, b = loss_and_grads(dense, x, y), loss_and_grads(chunked, x, y)
    for g, r in zip(a, b):
        assert rel_err(g, r) < RTOL
    assert torch.equal(dense(x, y)[2], chunked(x, y)[2])
    assert torch.equal(dense(x)[2], chunked(x)[2])


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize(
    "cfg", list(random_configs(4, seed=3)), ids=lambda c: str(sorted(c.items()))
)
def test_predictions_and_accuracy_are_on_the_plain_cosine(cfg, chunk):
    """Against the float64 arg-max of the plain sub-center cosine, with and without
    labels, and against ESPnet's copy."""
    plugin, espnet, x, y = build(cfg, class_chunk_size=chunk)
    want = reference_predictions(plugin, x)
    _, acc_p, pred_p = plugin(x, y)
    assert torch.equal(pred_p, want)
    assert float(acc_p) == pytest.approx(float((want == y).double().mean()))
    assert torch.equal(plugin(x)[2], want)
    _, acc_e, pred_e = espnet(x, y)
    assert torch.equal(pred_p, pred_e)
    assert float(acc_p) == pytest.approx(float(acc_e))


def test_fresh_loss_already_has_the_hard_negative_margin():
    """ESPnet's constructor leaves mp_eff = 0 until update(); the plugin does not."""
    cfg = TYPICAL
    plugin, _, x, y = build(cfg)
    fresh = EspnetLoss(**{k: v for k, v in cfg.items() if k != "B"})
    fresh.weight.data.copy_(plugin.weight.data)
    got = plugin(x, y)[0]
    assert abs(float(fresh(x, y)[0]) - float(got)) > 1e-3
    fresh.update(cfg["margin"])
    assert float(fresh(x, y)[0]) == pytest.approx(float(got), rel=RTOL)
    state = dict(vars(plugin))
    plugin.update(cfg["margin"])
    for key in ("cos_m", "sin_m", "th", "mm", "mmm", "cos_mp", "sin_mp", "mp_eff"):
        assert getattr(plugin, key) == state[key]


def test_mp_follows_the_margin_and_do_lm_removes_the_penalty():
    loss = PluginLoss(4, 10, margin=0.2, mp=0.06)
    loss.update(0.1)
    assert loss.mp_eff == pytest.approx(0.03)
    loss.update(0.0005)
    assert loss.mp_eff == 0.0 and loss.cos_mp == 1.0
    lm = PluginLoss(4, 10, margin=0.5, mp=0.06, k_top=5, do_lm=True)
    assert (lm.mp, lm.k_top, lm.mp_eff) == (0.0, 0, 0.0)


@pytest.mark.parametrize("chunk", [None, 3])
def test_shared_subcenter_init_starts_as_one_subcenter_per_class(chunk):
    """With shared sub-centers a fresh loss gives K = 1's values and embedding
    gradient (with the first sub-center of each class as the class's row), and its
    rows differ from class to class as an independent draw's do."""
    torch.manual_seed(3)
    shared = PluginLoss(8, 6, K=3, k_top=2, subcenter_init="shared",
                        class_chunk_size=chunk)  # fmt: skip
    rows = shared.weight.detach().view(6, 3, 8)
    assert torch.equal(rows[:, 1:], rows[:, :1].expand(6, 2, 8))
    assert torch.unique(rows[:, 0], dim=0).shape[0] == 6
    single = PluginLoss(8, 6, K=1, k_top=2, class_chunk_size=chunk)
    single.weight.data.copy_(rows[:, 0])
    x = torch.randn(5, 8, requires_grad=True)
    y = torch.tensor([0, 1, 5, 3, 3])
    got, _, preds = shared(x, y)
    (gx,) = torch.autograd.grad(got, x)
    want, _, want_preds = single(x, y)
    (wx,) = torch.autograd.grad(want, x)
    assert float(got) == pytest.approx(float(want), rel=RTOL)
    assert torch.allclose(gx, wx, rtol=1e-4, atol=1e-6)
    assert torch.equal(preds, want_preds)


@pytest.mark.parametrize("target", [True, False])
def test_finite_gradients_when_a_cosine_is_exactly_one(target):
    loss = PluginLoss(4, 6, K=2, k_top=3, margin=0.3, return_accuracy=True)
    espnet = EspnetLoss(4, 6, K=2, k_top=3, margin=0.3)
    with torch.no_grad():
        loss.weight.normal_()
        loss.weight[2 * 2] = torch.tensor([1.0, 0.0, 0.0, 0.0])  # class 2, sub-center 0
        espnet.weight.copy_(loss.weight)
    espnet.update(0.3)
    x = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.3, -1.0, 0.5, 0.1]])
    y = torch.tensor([2 if target else 4, 1])
    _, gx, gw = loss_and_grads(loss, x, y)
    assert torch.isfinite(gx).all() and torch.isfinite(gw).all()
    _, ex, ew = loss_and_grads(espnet, x, y)
    assert not torch.isfinite(ew).all()  # the defect being fixed
    # Rows without the degenerate cosine are untouched by the fix.
    assert torch.allclose(gx[1], ex[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_keeps_float32_angles(dtype):
    cfg = TYPICAL | dict(B=16, nclasses=30, nout=16)
    plugin, _, x, y = build(cfg)
    x_half = x.to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        half_loss = plugin(x_half, y)[0]
    assert half_loss.dtype == torch.float32
    # Exactly the float32 computation on the rounded inputs: the margin is not lost.
    assert float(half_loss) == pytest.approx(
        float(plugin(x_half.float(), y)[0]), rel=1e-6
    )
    assert float(half_loss) == pytest.approx(float(plugin(x, y)[0]), rel=2e-2)
    xg = x_half.clone().requires_grad_(True)
    plugin(xg, y)[0].backward()
    assert xg.grad.dtype == dtype and torch.isfinite(xg.grad.float()).all()


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(nout=0), "nout"),
        (dict(nclasses=0), "nclasses"),
        (dict(K=0), "K"),
        (dict(K=257), "K"),
        (dict(k_top=-1), "k_top"),
        (dict(k_top=10), "k_top"),
        (dict(scale=0.0), "scale"),
        (dict(scale=float("inf")), "scale"),
        (dict(margin=-0.1), "margin"),
        (dict(margin=math.pi / 2), "margin"),
        (dict(margin=float("nan")), "margin"),
        (dict(mp=-0.01), "mp"),
        (dict(mp=2.0), "mp"),
        (dict(class_chunk_size=0), "class_chunk_size"),
        # Types (YAML gives strings and booleans): ValueErrors, not typeguard's.
        (dict(K="3"), "K must be int, got '3' \\(str\\)"),
        (dict(K=True), "K must be int, got True \\(bool\\)"),
        (dict(nclasses=10.0), "nclasses must be int"),
        (dict(scale="32"), "scale must be float"),
        (dict(margin=False), "margin must be float"),
        (dict(easy_margin="yes"), "easy_margin must be bool"),
        (dict(class_chunk_size=True), "class_chunk_size must be int or None"),
        (dict(check_values=1), "check_values must be bool or None"),
        (dict(bogus=1), "unexpected keyword argument 'bogus'"),
        (dict(subcenter_init="tied"), "subcenter_init must be one of"),
        # The hard-negative margin mp * margin / 0.2 reaches pi/2.
        (dict(mp=1.5, margin=1.4), "hard-negative margin .* = 10.5 rad"),
        (dict(mp=0.63, margin=0.5), "must be < pi/2"),
    ],
)
def test_bad_constructor_arguments(kwargs, name):
    args = dict(nout=4, nclasses=10)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        PluginLoss(**args)


def test_hard_negative_margin_just_below_the_bound_and_with_do_lm():
    assert PluginLoss(4, 10, mp=0.62, margin=0.5).mp_eff == pytest.approx(1.55)
    # Large-margin fine-tuning has no hard-negative margin, whatever mp says.
    assert PluginLoss(4, 10, mp=1.5, margin=1.4, do_lm=True).mp_eff == 0.0


def test_update_rejects_bad_margin():
    with pytest.raises(ValueError, match="margin"):
        PluginLoss(4, 10).update(-0.5)


def test_update_rejects_a_margin_that_breaks_the_hard_negative_bound():
    """A margin scheduler calls update(): a margin at which mp_eff would reach pi/2
    is refused, and the loss keeps its previous margin."""
    loss = PluginLoss(4, 10, margin=0.2, mp=0.3)
    loss.update(1.0)  # mp_eff 1.5 rad
    with pytest.raises(ValueError, match="mp=0.3 at margin=1.1 .* 1.65 rad"):
        loss.update(1.1)
    assert loss.margin == 1.0 and loss.mp_eff == pytest.approx(1.5)


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("k_top", [0, 2])
def test_target_beyond_the_threshold_takes_the_linear_branch(chunk, k_top):
    """theta + m > pi (non-easy margin): the target logit is cos - (1 + cos(pi - m))
    instead of cos(theta + m). Random inputs never get there; here the target's
    sub-centers point away from the embedding."""
    margin, scale = 0.5, 10.0
    loss = PluginLoss(
        3, 4, K=2, k_top=k_top, margin=margin, scale=scale, class_chunk_size=chunk
    )
    with torch.no_grad():
        # Class c, sub-center k: row 2c + k. Row 0 of x is e1 and of class 0, whose
        # sub-centers are at cos -0.98 and about -0.995 from it.
        loss.weight.copy_(
            torch.tensor(
                [[-0.98, 0.199, 0.0], [-1.0, 0.0, 0.1],
                 [0.6, 0.8, 0.0], [0.0, 1.0, 0.0],
                 [0.3, 0.0, 0.9], [0.0, 0.0, 1.0],
                 [0.8, -0.6, 0.0], [0.1, 0.2, 0.3]]
            )
        )  # fmt: skip
    x = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.9, 0.1]])
    y = torch.tensor([0, 1])
    cos = F.normalize(x, dim=1) @ F.normalize(loss.weight.detach(), dim=1).T
    cos = cos.view(2, 4, 2).amax(2).double()
    th = math.cos(math.pi - margin)
    assert cos[0, 0] < th < cos[1, 1]  # row 0 beyond the threshold, row 1 not
    got, gx, gw = loss_and_grads(loss, x, y)
    cfg = dict(nclasses=4, K=2, scale=scale, margin=margin, easy_margin=False)
    ref = reference_of(loss, cfg, x, y)
    for g, r in zip((got, gx, gw), ref):
        assert rel_err(g, r) < RTOL
    if k_top == 0:
        # By hand, per row: target logit cos - (1 + th) on row 0 (the branch),
        # cos(theta + m) on row 1; the other logits are the plain cosines.
        rows = []
        for b, target in ((0, cos[0, 0] - (1 + th)),
                          (1, math.cos(math.acos(cos[1, 1]) + margin))):  # fmt: skip
            z = scale * cos[b].clone()
            z[y[b]] = scale * target
            rows.append(torch.logsumexp(z, 0) - z[y[b]])
        assert float(got) == pytest.approx(float(sum(rows) / 2), rel=1e-6)
        # cos(theta + m) on row 0 would give a different loss: the branch was taken.
        z = scale * cos[0].clone()
        z[0] = scale * math.cos(math.acos(cos[0, 0]) + margin)
        other = (torch.logsumexp(z, 0) - z[0] + rows[1]) / 2
        assert abs(float(other) - float(got)) > 0.1


@pytest.mark.parametrize(
    "x, y, word",
    [
        (torch.randn(3, 4, 1), torch.tensor([0, 1, 2]), "2-D"),
        (torch.randn(3, 5), torch.tensor([0, 1, 2]), "nout"),
        (torch.randn(3, 4), torch.tensor([0, 1]), "label"),
        (torch.randn(3, 4), torch.tensor([[0, 1, 2]]), "label"),
        (torch.randn(3, 4), torch.tensor([0, 1, 10]), "nclasses"),
        (torch.randn(3, 4), torch.tensor([0, -1, 2]), "nclasses"),
        (torch.randn(3, 4), torch.tensor([0.0, 1.0, 2.0]), "integer"),
        (torch.randint(0, 3, (3, 4)), torch.tensor([0, 1, 2]), "float"),
        (torch.tensor([[0.0, 1, 2, float("nan")]] * 3), torch.tensor([0, 1, 2]), "NaN"),
        (torch.randn(0, 4), torch.tensor([], dtype=torch.long), "empty"),
    ],
)
def test_bad_forward_inputs(x, y, word):
    with pytest.raises(ValueError, match=word):
        PluginLoss(4, 10)(x, y)


def test_label_shapes_accepted():
    loss = PluginLoss(4, 10, return_accuracy=False)
    x = torch.randn(3, 4)
    y = torch.tensor([1, 2, 3])
    ref = loss(x, y)
    assert torch.equal(loss(x, y.unsqueeze(1)), ref)
    # ESPnet squeezes the (1, 1) label of a batch of one into a scalar.
    assert torch.equal(loss(x[:1], torch.tensor(1)), loss(x[:1], y[:1]))


def test_return_conventions():
    x, y = torch.randn(5, 4), torch.randint(0, 10, (5,))
    old = PluginLoss(4, 10, return_accuracy=False)
    assert isinstance(old(x, y), torch.Tensor) and old(x, y).dim() == 0
    new = PluginLoss(4, 10, return_accuracy=True)
    new.weight.data.copy_(old.weight.data)
    loss, acc, preds = new(x, y)
    assert torch.equal(loss, old(x, y))
    assert float(acc) == float((preds == y).float().mean())
    none_loss, none_acc, none_preds = new(x)
    assert none_loss is None and none_acc is None and torch.equal(none_preds, preds)
    assert not returns_tuple_for("202506") and not returns_tuple_for("202412")
    assert returns_tuple_for("202509") and returns_tuple_for("202511")
    # The installed ESPnet is 202511: the default follows it.
    assert isinstance(PluginLoss(4, 10)(x, y), tuple)


@pytest.mark.parametrize(
    "cfg", list(random_configs(6, seed=2)), ids=lambda c: str(sorted(c.items()))
)
def test_dense_path_in_several_blocks_matches_reference(cfg, monkeypatch):
    monkeypatch.setattr(blocks, "DENSE_BLOCK", 4)
    plugin, _, x, y = build(cfg)
    for g, r in zip(loss_and_grads(plugin, x, y), reference_of(plugin, cfg, x, y)):
        assert rel_err(g, r) < RTOL


@pytest.mark.parametrize("chunk", [None, 3])
def test_second_backward_through_the_graph_gives_the_same_gradients(chunk, monkeypatch):
    """A second backward (retain_graph) reads what the forward kept (dense) or
    recomputes again (chunked): the first backward must not have overwritten it."""
    monkeypatch.setattr(blocks, "DENSE_BLOCK", 4)
    cfg = next(random_configs(1, seed=4)) | dict(B=6, nclasses=11, K=3, k_top=3)
    plugin, _, x, y = build(cfg, class_chunk_size=chunk)
    xg = x.clone().requires_grad_(True)
    loss = plugin(xg, y)[0]
    first = torch.autograd.grad(loss, [xg, plugin.weight], retain_graph=True)
    second = torch.autograd.grad(loss, [xg, plugin.weight])
    ref = reference_of(plugin, cfg, x, y)[1:]
    for a, b, r in zip(first, second, ref):
        assert rel_err(a, r) < RTOL
        assert rel_err(b, r) < RTOL


@pytest.fixture
def fresh_dynamo():
    """Each test compiles for its own shapes, clear of Dynamo's recompile limit."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@needs_cpu_compiler
@pytest.mark.parametrize(
    "cfg", list(random_configs(3, seed=3)), ids=lambda c: str(sorted(c.items()))
)
@pytest.mark.parametrize("chunk", [None, 3])
def test_compiled_block_kernels_match_reference(cfg, chunk, fresh_dynamo, monkeypatch):
    """The torch.compile block backend (what compile_kernels runs on accelerators), here
    on CPU, where the selection takes the fused C++ kernels (test_fused_cpu.py)."""
    monkeypatch.setattr(blocks, "DENSE_BLOCK", 4)  # several blocks, a short last one
    backend = blocks.BlockBackend(block_ops.compiled_ops(), chunk, torch.device("cpu"))
    plugin, _, x, y = build(cfg)
    xg = x.clone().requires_grad_(True)
    loss, pred = function.margin_softmax_cross_entropy(
        F.normalize(xg, dim=1), plugin.weight, y, plugin.constants(), backend
    )
    grads = torch.autograd.grad(loss, [xg, plugin.weight])
    for got, want in zip((loss.detach(), *grads), reference_of(plugin, cfg, x, y)):
        assert rel_err(got, want) < RTOL
    assert torch.equal(pred, reference_predictions(plugin, x))
    compiled_pred = function.subcenter_argmax(
        F.normalize(x, dim=1), plugin.weight.detach(), plugin.constants(), backend
    )
    assert torch.equal(compiled_pred, reference_predictions(plugin, x))


def test_compiled_ops_need_torch_compile(monkeypatch):
    monkeypatch.delattr(torch, "compile")
    monkeypatch.setattr(block_ops, "_compiled", None)
    with pytest.raises(RuntimeError, match="torch.compile"):
        block_ops.compiled_ops()
