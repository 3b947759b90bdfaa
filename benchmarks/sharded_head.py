"""Memory and communication per rank: the class-sharded head against data-parallel
training of the same loss.

``python benchmarks/sharded_head.py [--classes 200000] [--ranks 2] [--batch 64]
[--steps 3]`` starts that many gloo ranks on this machine. Each trains a small
replicated layer plus the loss twice: data-parallel (DistributedDataParallel over the
whole model, the loss's full weight on every rank) and class-sharded
(``shard_classes: true``; DDP over the replicated layer only, as the plugin's task sets
it up). Measured per rank and step: the bytes of the loss weight and its gradient held
by the rank, the payload bytes the rank hands to collectives (counted at every
``torch.distributed`` call the loss makes, and in a DDP communication hook for DDP's
gradient all-reduce), and the time. Then a computed table for 8 ranks at 100k, 1M and
10M classes with the same formulas the measured rows follow.

Payload is what a rank contributes to a collective (the input tensor): a ring
all-reduce then moves about 2 (R - 1) / R times that over each link, an all-gather
(R - 1) times it.
"""

import argparse
import os
import tempfile
import time
from datetime import timedelta
from typing import Dict, List

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from espnet_plugin_intertopk import ArcMarginProduct_intertopk_subcenter as Loss

K, D = 3, 192
FLOAT = 4
COLLECTIVES = ("all_gather", "all_reduce", "reduce_scatter_tensor", "gather")


class Counter:
    """Payload bytes handed to torch.distributed collectives, by name."""

    def __init__(self):
        self.bytes: Dict[str, int] = {}
        self.ddp = 0  # DDP's gradient all-reduce (its communication hook)
        self._originals = {}

    def _wrap(self, name):
        original = getattr(dist, name)

        def counted(*args, **kwargs):
            # The contributed tensor: all_gather(list, t), all_reduce(t),
            # reduce_scatter_tensor(out, t), gather(t, list).
            t = args[1] if name in ("all_gather", "reduce_scatter_tensor") else args[0]
            self.bytes[name] = self.bytes.get(name, 0) + t.numel() * t.element_size()
            return original(*args, **kwargs)

        return original, counted

    def __enter__(self):
        for name in COLLECTIVES:
            self._originals[name], wrapped = self._wrap(name)
            setattr(dist, name, wrapped)
        return self

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(dist, name, original)

    def total(self) -> int:
        return sum(self.bytes.values())


class Model(torch.nn.Module):
    def __init__(self, classes: int, shard: bool):
        super().__init__()
        self.layer = torch.nn.Linear(D, D)
        self.loss = Loss(
            D, classes, K=K, k_top=5, shard_classes=shard, return_accuracy=False
        )

    def forward(self, x, label):
        return self.loss(self.layer(x), label)


def _ddp_hook(counter: Counter):
    all_reduce = dist.all_reduce  # not the counted one: DDP's bytes are kept apart

    def hook(state, bucket):
        buf = bucket.buffer()
        counter.ddp += buf.numel() * buf.element_size()
        fut = all_reduce(buf, async_op=True).get_future()
        return fut.then(lambda f: f.value()[0] / dist.get_world_size())

    return hook


def run_mode(rank: int, args, shard: bool) -> Dict[str, float]:
    torch.manual_seed(0)
    model = Model(args.classes, shard)
    if shard:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, ["loss.weight"]
        )
    ddp = DistributedDataParallel(model)
    counter = Counter()
    ddp.register_comm_hook(None, _ddp_hook(counter))
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, D, generator=g)
    label = torch.randint(0, args.classes, (args.batch,), generator=g)
    ddp(x, label).backward()  # warm-up (DDP's first step builds its buckets)
    counter.bytes.clear()
    counter.ddp = 0
    ddp.zero_grad()
    start = time.perf_counter()
    steps = range(args.steps)
    for _ in tqdm(steps, desc=f"rank {rank} {'sharded' if shard else 'DDP'}",
                  disable=rank != 0):  # fmt: skip
        with counter:
            ddp(x, label).backward()
        ddp.zero_grad(set_to_none=False)
    seconds = (time.perf_counter() - start) / args.steps
    w = model.loss.weight
    return {
        "weight_grad_mib": 2 * w.numel() * w.element_size() / 2**20,
        "loss_comm_mib": counter.total() / args.steps / 2**20,
        "ddp_comm_mib": counter.ddp / args.steps / 2**20,
        "seconds": seconds,
    }


def worker(rank: int, args, init: str, out: str) -> None:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.ranks))
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=args.ranks,
        timeout=timedelta(minutes=30),
    )  # fmt: skip
    rows = {"data-parallel": run_mode(rank, args, False)}
    rows["class-sharded"] = run_mode(rank, args, True)
    gathered: List = [None] * args.ranks
    dist.all_gather_object(gathered, rows)
    if rank == 0:
        torch.save(gathered, out)
    dist.destroy_process_group()


def computed(classes: int, ranks: int, batch: int, k_top: int = 5) -> Dict[str, float]:
    """Per-rank bytes of the formulas the measured rows follow (float32, K=3,
    D=192, the replicated layer left out)."""
    n = ranks * batch
    weight = K * classes * D * FLOAT
    sharded_comm = (
        batch * D * FLOAT  # embeddings
        + batch * 8  # labels
        + 4 * 8  # batch sizes (twice: loss, reduce-scatter)
        + 3 * n * FLOAT  # target cosine and sub-center, row maximum, row sum
        + 2 * n * 8  # best cosine and its class
        + n * k_top * (FLOAT + 8 + 8)  # hard-negative candidates
        + FLOAT  # incoming gradient
        + n * D * FLOAT  # embedding gradients (reduce-scatter input)
    )
    return {
        "dp_weight_grad_gib": 2 * weight / 2**30,
        "dp_comm_gib": weight / 2**30,
        "sh_weight_grad_gib": 2 * weight / ranks / 2**30,
        "sh_comm_mib": sharded_comm / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=200_000)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="rows per rank")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "rows.pt")
        mp.spawn(worker, args=(args, f"file://{d}/rendezvous", out), nprocs=args.ranks)
        ranks = torch.load(out, weights_only=False)
    print(
        f"\nMeasured: {args.ranks} gloo ranks on this machine, {args.classes} classes, "
        f"K={K}, D={D}, {args.batch} rows per rank, k_top 5, mean of {args.steps} "
        "steps. DDP's all-reduce includes the replicated layer "
        f"({(D * D + D) * FLOAT / 2**20:.2f} MiB) in both modes.\n"
    )
    print("| mode | rank | loss weight + gradient (MiB) | DDP all-reduce per step "
          "(MiB) | loss's collectives per step (MiB) | step (s) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for mode in ("data-parallel", "class-sharded"):
        for rank, rows in enumerate(ranks):
            r = rows[mode]
            print(
                f"| {mode} | {rank} | {r['weight_grad_mib']:.1f} | "
                f"{r['ddp_comm_mib']:.2f} | {r['loss_comm_mib']:.2f} | "
                f"{r['seconds']:.2f} |"
            )
    c = computed(args.classes, args.ranks, args.batch)
    print(
        f"\nThe formulas at the measured size: data-parallel "
        f"{c['dp_weight_grad_gib'] * 1024:.1f} MiB weight + gradient, "
        f"{c['dp_comm_gib'] * 1024:.2f} MiB all-reduce; "
        f"sharded {c['sh_weight_grad_gib'] * 1024:.1f} MiB, "
        f"{c['sh_comm_mib']:.2f} MiB\n"
    )
    print(f"Computed: 8 ranks, {args.batch} rows per rank, K={K}, D={D}, float32\n")
    print("| classes | data-parallel weight + gradient per rank | data-parallel "
          "all-reduce per step | sharded weight + gradient per rank | sharded "
          "collectives per step |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|")
    for classes in (100_000, 1_000_000, 10_000_000):
        c = computed(classes, 8, args.batch)
        print(
            f"| {classes:,} | {c['dp_weight_grad_gib']:.2f} GiB | "
            f"{c['dp_comm_gib']:.2f} GiB | {c['sh_weight_grad_gib']:.2f} GiB | "
            f"{c['sh_comm_mib']:.2f} MiB |"
        )


if __name__ == "__main__":
    main()
