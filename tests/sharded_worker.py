"""The rank side of tests/test_sharded_head.py: jobs that every rank of a gloo group
runs, each comparing the class-sharded loss with the unsharded one. Kept free of the
test suite's fixtures so that the spawned processes import little.

A job records its failures and keeps going, so that every rank makes the same
collective calls whatever fails."""

import json
import os
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.distributed as dist

from espnet_plugin_intertopk import ArcMarginProduct_intertopk_subcenter as Loss
from espnet_plugin_intertopk.distributed import grad_norm
from espnet_plugin_intertopk.distributed.shard import ClassShard, class_range

NOUT, NCLASSES, K = 8, 7, 3  # 7 classes: blocks of 3+4 (R=2) and 2+2+3 (R=3)


def batch(rank: int, case: int, weight: torch.Tensor):
    """Rank ``rank``'s batch (3 + rank rows) and incoming gradient, the same in every
    process."""
    g = torch.Generator().manual_seed(1000 * case + rank)
    x = torch.randn(3 + rank, NOUT, generator=g)
    label = torch.randint(0, NCLASSES, (3 + rank,), generator=g)
    # A hard case: a row along one of its target's sub-centers (cos = 1).
    x[0] = 2.0 * weight[K * label[0]]
    return x, label, 0.5 + rank


def full_weight(case: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(case)
    return torch.randn(K * NCLASSES, NOUT, generator=g)


def unsharded(weight, x, label, grad, **conf):
    """Loss, accuracy, predictions, embedding and weight gradients of the ordinary
    loss on one batch, the loss multiplied by ``grad``."""
    ref = Loss(NOUT, NCLASSES, K=K, return_accuracy=True, **conf)
    ref.load_state_dict({"weight": weight})
    x = x.clone().requires_grad_(True)
    loss, acc, pred = ref(x, label)
    (loss * grad).backward()
    return loss.detach(), acc, pred, x.grad, ref.weight.grad


class Errors(list):
    def close(self, a, b, what: str) -> None:
        try:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        except AssertionError as err:
            self.append(f"{what}: {err}")

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.append(what)

    def raises(self, fn: Callable, match: str, what: str) -> None:
        try:
            fn()
        except ValueError as err:
            self.check(match in str(err), f"{what}: wrong message {err}")
        else:
            self.append(f"{what}: no ValueError")


def sharded_loss(world: int, conf: Dict, errors: Errors, what: str) -> Loss:
    """The class-sharded loss of this rank. A group of one rank gets the ordinary loss
    (checked here), which the comparison would compare with itself: there the sharded
    code path is forced over a single block of all classes, so that its collectives,
    combined log-sum-exp and global hard-negative choice are what is compared."""
    loss = Loss(NOUT, NCLASSES, K=K, shard_classes=True, return_accuracy=True, **conf)
    if world == 1:
        errors.check(loss.shard is None, f"{what}: one rank is not the ordinary loss")
        loss.shard = ClassShard(rank=0, world=1, start=0, end=NCLASSES)
    return loss


def equivalence(rank: int, world: int, cases: List[Dict], errors: Errors) -> None:
    for i, conf in enumerate(cases):
        what = f"rank {rank}/{world} case {conf}"
        weight = full_weight(i)
        loss = sharded_loss(world, conf, errors, what)
        start, end = class_range(NCLASSES, rank, world)
        errors.check(loss.class_range == (start, end), f"{what} class_range")
        errors.check(loss.weight.shape == (K * (end - start), NOUT), f"{what} shape")
        loss.load_state_dict({"weight": weight})
        x, label, grad = batch(rank, i, weight)
        x = x.requires_grad_(True)
        value, acc, pred = loss(x, label)
        (value * grad).backward()
        expected_w = torch.zeros_like(weight)
        for r in range(world):
            ref = unsharded(weight, *batch(r, i, weight), **conf)
            expected_w += ref[4] / world  # what DDP's all-reduce averages
            if r == rank:
                errors.close(value, ref[0], f"{what} loss")
                errors.close(acc, ref[1], f"{what} accuracy")
                errors.check(torch.equal(pred, ref[2]), f"{what} predictions")
                errors.close(x.grad, ref[3], f"{what} embedding gradient")
        rows = slice(start * K, end * K)
        errors.close(loss.weight.grad, expected_w[rows], f"{what} weight gradient")
        # Predictions without labels (over all ranks' classes) match too.
        with torch.no_grad():
            _, _, alone = loss(x.detach())
        errors.check(torch.equal(alone, pred), f"{what} predictions without labels")


def checkpoint_and_clip(rank: int, world: int, cases, errors: Errors) -> None:
    weight = full_weight(99)
    loss = Loss(NOUT, NCLASSES, K=K, shard_classes=True)
    loss.load_state_dict({"weight": weight})
    start, end = loss.class_range
    with torch.no_grad():
        loss.weight.add_(1.0)
    loss.sharded_weight.gather()
    state = loss.state_dict()["weight"]
    if rank == 0:
        errors.check(torch.equal(state, weight + 1.0), "gathered full weight")
    else:
        errors.check(torch.isnan(state).all(), "placeholder off rank 0")
    errors.check(state.shape == weight.shape, "full shape in state_dict")
    with torch.no_grad():
        loss.weight.add_(1.0)  # changed since the gather: no stale copy is served
    errors.check(torch.isnan(loss.state_dict()["weight"]).all(), "stale copy served")
    # --init_param's pattern: state_dict(), update some keys, load it back.
    before = loss.weight.detach().clone()
    loss.load_state_dict(loss.state_dict())
    errors.check(torch.equal(loss.weight, before), "placeholder loaded")
    errors.raises(
        lambda: loss.load_state_dict({"weight": torch.zeros(20, NOUT)}),
        "weight in the checkpoint has shape (20, 8)",
        "wrong checkpoint shape",
    )
    # Optimizer state: Adam's moments of the block, gathered in the full shape and
    # sliced again on loading.
    grad = torch.linspace(-1, 1, K * NCLASSES * NOUT).view(-1, NOUT)
    adam = torch.optim.Adam([loss.weight], lr=0.1)
    loss.sharded_weight.attach(adam)
    loss.weight.grad = grad[loss.sharded_weight.rows].clone()
    adam.step()
    loss.sharded_weight.gather([adam])
    saved = adam.state_dict()
    moment = saved["state"][0]["exp_avg"]
    if rank == 0:
        errors.close(moment, 0.1 * grad, "gathered Adam moment")
    errors.check(moment.shape == grad.shape, "full shape of the optimizer state")
    own = adam.state[loss.weight]["exp_avg"]
    errors.check(own.shape == loss.weight.shape, "the optimizer's own state kept")
    if rank == 0:
        saved["state"][0]["exp_avg"] = saved["state"][0]["exp_avg"] * 2
    dist.broadcast_object_list(box := [saved], src=0)
    fresh = torch.optim.Adam([loss.weight], lr=0.1)
    loss.sharded_weight.attach(fresh)
    fresh.load_state_dict(box[0])
    errors.close(
        fresh.state[loss.weight]["exp_avg"],
        0.2 * grad[loss.sharded_weight.rows],
        "optimizer state sliced on loading",
    )
    # Gradient clipping: the unsharded model's norm, the same factor on every rank.
    replicated = torch.nn.Parameter(torch.zeros(4))
    replicated.grad = torch.full((4,), 2.0)
    full_grad = torch.arange(K * NCLASSES * NOUT, dtype=torch.float32).view(-1, NOUT)
    loss.weight.grad = full_grad[start * K : end * K] / 100
    expected = torch.linalg.vector_norm(
        torch.cat([replicated.grad, full_grad.view(-1) / 100])
    )
    total = grad_norm.clip_grad_norm_([replicated, loss.weight], max_norm=1.0)
    errors.close(total, expected, "total norm")
    errors.close(replicated.grad, torch.full((4,), 2.0) / (expected + 1e-6), "clip")


def disagreeing_ranks(rank: int, world: int, cases, errors: Errors) -> None:
    errors.raises(
        lambda: Loss(NOUT, NCLASSES + rank, K=K, shard_classes=True),
        "ranks disagree on the loss's (nclasses, K, nout)",
        "ranks that disagree",
    )


JOBS = {
    3: [equivalence],
    2: [equivalence, checkpoint_and_clip, disagreeing_ranks],
    1: [equivalence],
}


def main(rank: int, nprocs: int, workdir: str, cases: List[Dict]) -> None:
    """Groups of 3, 2 and 1 ranks in turn (ranks beyond a group's size wait); writes
    ``result<rank>.json``: job name -> list of failures."""
    torch.set_num_threads(1)
    results: Dict[str, List[str]] = {}
    for world in sorted(JOBS, reverse=True):
        if rank >= world:
            continue
        dist.init_process_group(
            "gloo",
            init_method=f"file://{os.path.join(workdir, f'rendezvous{world}')}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=120),
        )
        try:
            for job in JOBS[world]:
                errors = Errors()
                try:
                    job(rank, world, cases, errors)
                except Exception:  # noqa: BLE001 - reported by the test
                    errors.append(traceback.format_exc())
                results[f"{job.__name__}[{world}]"] = errors
        finally:
            dist.destroy_process_group()
    Path(workdir, f"result{rank}.json").write_text(json.dumps(results))
