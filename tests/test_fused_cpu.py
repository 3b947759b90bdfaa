"""The fused CPU kernels (compile_kernels on CPU; dense and memory-bounded) against
the float64 reference, across tile sizes and thread counts, and their reuse of the
weight-gradient memory."""

import pytest
import torch

from espnet_plugin_intertopk import ArcMarginProduct_intertopk_subcenter as PluginLoss
from espnet_plugin_intertopk.kernels import fused_cpu

from conftest import needs_cpu_compiler
from test_loss import (
    RTOL,
    TYPICAL,
    build,
    loss_and_grads,
    random_configs,
    reference_of,
    rel_err,
)

pytestmark = needs_cpu_compiler

CONFIGS = [
    TYPICAL | dict(B=40, nclasses=300, nout=24),
    dict(
        B=9,
        nclasses=37,
        nout=8,
        K=4,
        k_top=6,
        margin=0.45,
        mp=0.1,
        easy_margin=True,
        do_lm=False,
        scale=16.0,
    ),
    dict(
        B=17,
        nclasses=120,
        nout=16,
        K=1,
        k_top=0,
        margin=0.3,
        mp=0.0,
        easy_margin=False,
        do_lm=True,
        scale=64.0,
    ),
] + [c | dict(B=c["B"] + 5) for c in random_configs(3, seed=11)]


@pytest.fixture(params=[1, 2], ids=lambda n: f"{n}threads")
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("chunk", [None, 50], ids=["dense", "recompute"])
@pytest.mark.parametrize("tile", [7, 256])
@pytest.mark.parametrize(
    "cfg", CONFIGS, ids=lambda c: f"C{c['nclasses']}K{c['K']}k{c['k_top']}"
)
def test_fused_matches_reference(cfg, tile, chunk, threads, monkeypatch):
    """Several tiles with a short last one (tile 7) or one tile; one or two threads,
    whose running maxima and top-k candidates the Python side merges; best and arg kept
    for the backward (dense) or recomputed there (a class chunk size is set)."""
    monkeypatch.setattr(fused_cpu, "TILE", tile)
    plugin, _, x, y = build(cfg, compile_kernels=True, class_chunk_size=chunk)
    ref = reference_of(plugin, cfg, x, y)
    for got, want in zip(loss_and_grads(plugin, x, y), ref):
        assert rel_err(got, want) < RTOL
    eager = PluginLoss(
        **{k: v for k, v in cfg.items() if k != "B"}, return_accuracy=True
    )
    eager.weight.data.copy_(plugin.weight.data)
    assert torch.equal(plugin(x, y)[2], eager(x, y)[2])
    assert torch.equal(plugin(x)[2], eager(x)[2])  # predictions without labels


def _step(loss, x, y):
    xg = x.clone().requires_grad_(True)
    loss(xg, y)[0].backward()


@pytest.mark.parametrize("chunk", [None, 50], ids=["dense", "recompute"])
def test_weight_gradient_memory_reused_only_when_nothing_holds_it(chunk):
    cfg = CONFIGS[0]
    plugin, _, x, y = build(cfg, compile_kernels=True, class_chunk_size=chunk)
    x2, y2 = torch.randn_like(x), torch.randint(0, cfg["nclasses"], y.shape)

    _step(plugin, x, y)
    held = plugin.weight.grad  # e.g. a user keeps last step's gradient
    held_value = held.clone()
    plugin.weight.grad = None
    _step(plugin, x2, y2)
    assert plugin.weight.grad.data_ptr() != held.data_ptr()
    assert torch.equal(held, held_value)
    assert rel_err(plugin.weight.grad, reference_of(plugin, cfg, x2, y2)[2]) < RTOL

    # Nothing holds the last gradient any more (zero_grad(set_to_none=True)): its buffer
    # is taken again, and the values are this step's.
    last = plugin.weight.grad.data_ptr()
    del held
    plugin.weight.grad = None
    _step(plugin, x, y)
    assert plugin.weight.grad.data_ptr() == last
    assert rel_err(plugin.weight.grad, reference_of(plugin, cfg, x, y)[2]) < RTOL


def test_gradient_accumulation_over_steps_adds_up():
    """Without zero_grad between two backward passes (ESPnet's accum_grad > 1) the
    gradient is the sum: the second step must not write into the first one's buffer."""
    cfg = CONFIGS[1]
    plugin, _, x, y = build(cfg, compile_kernels=True)
    x2, y2 = torch.randn_like(x), torch.randint(0, cfg["nclasses"], y.shape)
    want = reference_of(plugin, cfg, x, y)[2] + reference_of(plugin, cfg, x2, y2)[2]
    for _ in range(2):  # the second round reuses the buffers of the first
        plugin.weight.grad = None
        _step(plugin, x, y)
        _step(plugin, x2, y2)
        assert rel_err(plugin.weight.grad, want) < RTOL


def test_two_losses_keep_their_own_gradient_memory():
    """Steps of two losses of the same size alternate (two heads, or a benchmark): after
    the first round neither allocates a gradient-sized array any more (counted with the
    profiler's allocator events); each takes its own last gradient's memory again."""
    from torch.profiler import ProfilerActivity, profile

    cfg = CONFIGS[0]
    a, _, x, y = build(cfg, compile_kernels=True)
    b, _, _, _ = build(cfg, compile_kernels=True)
    grad_bytes = a.weight.numel() * 4

    def round_of_steps():
        for loss in (a, b):
            loss.weight.grad = None
            _step(loss, x, y)

    round_of_steps()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(3):
            round_of_steps()
    sizes = [e.cpu_memory_usage for e in prof.events() if e.cpu_memory_usage > 0]
    assert sizes, "the profiler recorded no allocations"
    assert grad_bytes not in sizes
    assert rel_err(b.weight.grad, reference_of(b, cfg, x, y)[2]) < RTOL


@pytest.mark.parametrize("chunk", [None, 50], ids=["dense", "recompute"])
def test_second_backward_through_the_graph(chunk):
    cfg = CONFIGS[1]
    plugin, _, x, y = build(cfg, compile_kernels=True, class_chunk_size=chunk)
    xg = x.clone().requires_grad_(True)
    loss = plugin(xg, y)[0]
    first = torch.autograd.grad(loss, [xg, plugin.weight], retain_graph=True)
    second = torch.autograd.grad(loss, [xg, plugin.weight])
    for a, b, r in zip(first, second, reference_of(plugin, cfg, x, y)[1:]):
        assert rel_err(a, r) < RTOL
        assert rel_err(b, r) < RTOL


def test_bad_inputs_get_a_clear_error():
    kernels = fused_cpu.load()
    x, w, y = torch.randn(4, 8), torch.randn(30, 8), torch.zeros(4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="float32"):
        kernels.forward_tiles(x.double(), w.double(), y, 3, 30.0, 2, 4, True)
    with pytest.raises(RuntimeError, match="K must divide"):
        kernels.forward_tiles(x, w, y, 4, 30.0, 2, 4, True)
