"""Speed and memory of one forward+backward step: ESPnet's copy vs the plugin.

    python benchmarks/loss_speed.py                 # the default table (CPU)
    python benchmarks/loss_speed.py --device cuda --batch 512 --big_batch 512 \\
        --big_espnet
    python benchmarks/loss_speed.py --quick         # small shapes, a smoke run

Implementations: ``espnet`` (ESPnet's built-in copy after ``update(0.2)``), ``plugin``
(default eager kernels), ``plugin_compiled`` (``compile_kernels=True``; its compile
happens in the warm-up step, outside the timing), ``plugin_chunked``
(``class_chunk_size``) and ``plugin_chunked_compiled`` (both).

For every shape, one process times all implementations alternately (round-robin over
repetitions, so a noisy machine slows them alike) next to the matrix-product floor: the
three products any implementation needs (x W^T forward; g W and g^T x backward). Peak
memory is measured in a separate process per (shape, implementation), so peaks do not
mix: on CUDA with ``max_memory_allocated``, on CPU from the profiler's allocator events
(peak bytes held during the step). "Extra" memory is what the step needs beyond the
weight and its gradient. Where an implementation does not fit (ESPnet's copy at 1M
classes) its
memory is extrapolated linearly in batch x classes from the largest measured shape and
marked as computed.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Dict, List

from tqdm import tqdm

IMPLS = (
    "espnet",
    "plugin",
    "plugin_compiled",
    "plugin_chunked",
    "plugin_chunked_compiled",
)


@dataclass(frozen=True)
class Case:
    batch: int
    classes: int
    K: int = 3
    D: int = 192
    k_top: int = 5
    dtype: str = "float32"
    device: str = "cpu"
    chunk: int = 4096
    impls: tuple = IMPLS
    reps: int = 7


def _torch():
    import torch

    return torch


def build(impl: str, case: Case):
    from espnet2.spk.loss.aamsoftmax_subcenter_intertopk import (
        ArcMarginProduct_intertopk_subcenter as EspnetLoss,
    )

    import espnet_plugin_intertopk  # noqa: F401
    from espnet_plugin_intertopk import (
        ArcMarginProduct_intertopk_subcenter as PluginLoss,
    )

    kw = dict(
        nout=case.D, nclasses=case.classes, K=case.K, k_top=case.k_top, margin=0.2
    )
    if impl == "espnet":
        loss = EspnetLoss(**kw)
        loss.update(0.2)
    else:
        chunk = case.chunk if impl.startswith("plugin_chunked") else None
        loss = PluginLoss(
            **kw,
            class_chunk_size=chunk,
            return_accuracy=True,
            compile_kernels=impl.endswith("compiled"),
        )
    return loss.to(case.device)


def inputs(case: Case):
    torch = _torch()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(case.batch, case.D, generator=g).to(
        case.device, getattr(torch, case.dtype)
    )
    y = torch.randint(0, case.classes, (case.batch,), generator=g).to(case.device)
    return x, y


def sync(device: str):
    if device.startswith("cuda"):
        _torch().cuda.synchronize()


def step(loss, x, y, case: Case):
    torch = _torch()
    xg = x.detach().requires_grad_(True)
    loss.weight.grad = None
    with torch.autocast(
        device_type=x.device.type, dtype=x.dtype, enabled=x.dtype != torch.float32
    ):
        out = loss(xg, y)[0]
    out.backward()


def matmul_floor(case: Case):
    """The three products of one step, on the same shapes, float32, into outputs
    allocated once. Fresh outputs (50 MB and 40 MB here) would be page-faulted anew on
    every call or not, depending on what else the process has allocated: the floor
    then swung by half between runs. Preallocated, it is the products alone."""
    torch = _torch()
    rows = case.K * case.classes
    w = torch.randn(rows, case.D, device=case.device)
    x = torch.randn(case.batch, case.D, device=case.device)
    g = torch.randn(case.batch, rows, device=case.device)
    logits = torch.empty(case.batch, rows, device=case.device)
    grad_x = torch.empty(case.batch, case.D, device=case.device)
    grad_w = torch.empty(rows, case.D, device=case.device)

    def run():
        torch.mm(x, w.t(), out=logits)
        torch.mm(g, w, out=grad_x)
        torch.mm(g.t(), x, out=grad_w)

    return run


def worker_timing(case: Case) -> Dict[str, float]:
    x, y = inputs(case)
    runs = {"floor": matmul_floor(case)}
    losses = []
    for impl in case.impls:
        loss = build(impl, case)
        # One weight for all: at 1M classes every copy (and its gradient) is 2.2 GB.
        if losses:
            loss.weight = losses[0].weight
        losses.append(loss)
        runs[impl] = lambda loss=loss: step(loss, x, y, case)
    times = {k: [] for k in runs}

    def release():  # outside the timing: freeing a 2.2 GB gradient takes a while too
        if losses:
            losses[0].weight.grad = None

    for f in runs.values():  # warm-up
        f()
        release()
    for _ in range(case.reps):
        for name, f in runs.items():
            sync(case.device)
            t = time.perf_counter()
            f()
            sync(case.device)
            times[name].append(time.perf_counter() - t)
            release()
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def _cpu_step_peak_mb(loss, x, y, case: Case) -> float:
    """Peak of the bytes PyTorch's CPU allocator holds during one step, counting every
    allocation from before a warm-up step on: what an implementation keeps from step to
    step (a reused gradient buffer, say) counts as held, one-time work does not show
    twice. From the profiler's memory events (the resident set is not usable: glibc
    reuses and returns freed memory at its own pace)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step(loss, x, y, case)
        loss.weight.grad = None  # the measured step produces the gradient anew
        with record_function("measured step"):
            step(loss, x, y, case)
    with tempfile.TemporaryDirectory() as d:
        trace = os.path.join(d, "trace.json")
        prof.export_chrome_trace(trace)
        with open(trace) as f:
            events = json.load(f)["traceEvents"]
    window = next(e for e in events if e.get("name") == "measured step" and "dur" in e)
    start, end = window["ts"], window["ts"] + window["dur"]
    totals = [
        e["args"]["Total Allocated"]
        for e in events
        if e.get("name") == "[memory]" and start <= e["ts"] <= end
    ]
    return max(totals, default=0) / 2**20


def worker_memory(case: Case, impl: str) -> float:
    """Peak memory of one step beyond the weight and its gradient, in MiB."""
    torch = _torch()
    loss = build(impl, case)
    x, y = inputs(case)
    grad_mb = loss.weight.numel() * loss.weight.element_size() / 2**20
    if case.device.startswith("cuda"):
        step(loss, x, y, case)  # warm-up
        loss.weight.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
        step(loss, x, y, case)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20 - base - grad_mb
    return _cpu_step_peak_mb(loss, x, y, case) - grad_mb


def run_worker(args: List[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *args]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def default_cases(a) -> List[Case]:
    base = Case(
        batch=a.batch, classes=a.classes, dtype="float32", device=a.device, reps=a.reps
    )
    big_impls = ("espnet",) * a.big_espnet + IMPLS[1:]
    big = Case(
        batch=a.big_batch,
        classes=a.big_classes,
        device=a.device,
        reps=3,
        chunk=a.big_chunk,
        impls=big_impls,
    )
    bf16 = replace(
        base, dtype="bfloat16", impls=("espnet", "plugin", "plugin_compiled")
    )
    cases = [base, bf16, big]
    if a.quick:
        cases = [replace(c, batch=32, classes=2000, reps=3) for c in cases[:2]]
        cases.append(replace(big, batch=16, classes=50000, chunk=8192))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--classes", type=int, default=17982)
    parser.add_argument("--big_batch", type=int, default=128)
    parser.add_argument("--big_classes", type=int, default=1_000_000)
    parser.add_argument("--big_chunk", type=int, default=32768)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument(
        "--big_espnet",
        action="store_true",
        help="also run ESPnet's copy at the large class count (GPU memory)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small shapes (smoke test)"
    )
    parser.add_argument(
        "--worker", choices=("timing", "memory"), help=argparse.SUPPRESS
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    a = parser.parse_args()

    if a.worker:
        case = Case(
            **{**json.loads(a.case), "impls": tuple(json.loads(a.case)["impls"])}
        )
        result = (
            worker_timing(case) if a.worker == "timing" else worker_memory(case, a.impl)
        )
        print(json.dumps(result))
        return

    cases = default_cases(a)
    jobs = [(c, None) for c in cases] + [(c, i) for c in cases for i in c.impls]
    timing, memory = {}, {}
    for case, impl in tqdm(jobs, desc="benchmark processes", unit="proc"):
        key = json.dumps(asdict(case))
        if impl is None:
            timing[key] = run_worker(["--worker", "timing", "--case", key])
        else:
            memory[(key, impl)] = run_worker(
                ["--worker", "memory", "--case", key, "--impl", impl]
            )

    # ESPnet's extra memory per (batch x classes), to extrapolate where it was not run.
    per_cell = None
    for case in cases:
        m = memory.get((json.dumps(asdict(case)), "espnet"))
        if isinstance(m, float):
            per_cell = m / (case.batch * case.classes)

    header = (
        "impl",
        "batch",
        "classes",
        "K",
        "D",
        "k_top",
        "dtype",
        "device",
        "fwd+bwd ms",
        "speed-up vs ESPnet",
        "x matmul floor",
        "peak extra MiB",
    )
    rows = []
    for case in cases:
        key = json.dumps(asdict(case))
        t = timing[key]
        for impl in ("espnet",) + tuple(i for i in IMPLS if i != "espnet"):
            ms = t.get(impl) if "error" not in t else None
            if impl in case.impls:
                mem = memory[(key, impl)]
                mem_s = (
                    f"{mem:.0f}" if isinstance(mem, float) else f"error: {mem['error']}"
                )
            elif impl == "espnet" and per_cell is not None:
                mem_s = (
                    f"~{per_cell * case.batch * case.classes:.0f} (computed, not run)"
                )
            else:
                continue
            esp = t.get("espnet")
            rows.append(
                (
                    impl,
                    case.batch,
                    case.classes,
                    case.K,
                    case.D,
                    case.k_top,
                    case.dtype,
                    case.device,
                    f"{ms:.1f}" if ms else "-",
                    f"{esp / ms:.2f}x" if ms and esp else "-",
                    f"{ms / t['floor']:.2f}" if ms and "floor" in t else "-",
                    mem_s,
                )
            )
        if "floor" in t:
            rows.append(
                (
                    "matmul floor",
                    case.batch,
                    case.classes,
                    case.K,
                    case.D,
                    "-",
                    "float32",
                    case.device,
                    f"{t['floor']:.1f}",
                    "-",
                    "1.00",
                    "-",
                )
            )
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(v) for v in r) + " |")


if __name__ == "__main__":
    main()
