"""Peak memory of the sub-center cleaning scan at a large class count.

``python benchmarks/subcenter_scan_memory.py [--classes 1000000] [--utterances 256]``
scans random embeddings against a random weight (``classes * K`` rows of ``D``) with
several class chunk sizes and prints one table: the peak bytes PyTorch's CPU allocator
holds beyond the weight during the scan (from the profiler's memory events, counted
from the scan's start), the time per batch, and what the (utterances x classes x K)
cosine array of a direct computation would take for comparison.
"""

import argparse
import json
import os
import tempfile
import time

import torch
from tqdm import tqdm

from espnet_plugin_intertopk.cleaning.subcenters import SubcenterScan


def scan_peak_mib(weight, K, chunk, embeddings, labels, batch):
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        scan = SubcenterScan(weight, K, chunk)
        for i in range(0, len(embeddings), batch):
            scan.add(embeddings[i : i + batch], labels[i : i + batch])
        scan.result()
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as d:
        trace = os.path.join(d, "trace.json")
        prof.export_chrome_trace(trace)
        with open(trace) as f:
            events = json.load(f)["traceEvents"]
    totals = [
        e["args"]["Total Allocated"] for e in events if e.get("name") == "[memory]"
    ]
    return max(totals, default=0) / 2**20, 1000 * seconds * batch / len(embeddings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=1_000_000)
    parser.add_argument("--K", type=int, default=3)
    parser.add_argument("--dim", type=int, default=192)
    parser.add_argument("--utterances", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunks", type=int, nargs="+", default=[8192, 32768, 131072])
    a = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(a.classes * a.K, a.dim, generator=g)
    embeddings = torch.randn(a.utterances, a.dim, generator=g)
    labels = torch.randint(0, a.classes, (a.utterances,), generator=g)
    rows = []
    for chunk in tqdm(a.chunks, desc="chunk sizes"):
        peak, ms = scan_peak_mib(weight, a.K, chunk, embeddings, labels, a.batch)
        rows.append((chunk, peak, ms))
    weight_mib = weight.numel() * 4 / 2**20
    direct = a.utterances * a.classes * a.K * 4 / 2**20
    print(
        f"\nclasses {a.classes:,}, K {a.K}, D {a.dim}, {a.utterances} utterances in "
        f"batches of {a.batch}; weight {weight_mib:,.0f} MiB (not counted); torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads\n"
    )
    print("| class chunk | peak extra MiB | ms per batch |")
    print("|---:|---:|---:|")
    for chunk, peak, ms in rows:
        print(f"| {chunk:,} | {peak:,.0f} | {ms:,.0f} |")
    million = 1_000_000 * a.classes * a.K * 4 / 2**40
    print(
        f"| direct (N x C x K cosines) | {direct:,.0f} for these {a.utterances} "
        f"utterances; {million:,.1f} TiB for 1M utterances | - |"
    )


if __name__ == "__main__":
    main()
