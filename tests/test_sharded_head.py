"""The class-sharded head (``shard_classes``) against the unsharded loss under
data-parallel training: gloo process groups of 3, 2 and 1 ranks on CPU (one spawn),
each rank with its own batch of its own size; every rank also computes the unsharded
reference for every rank's batch (tests/sharded_worker.py). One rank holds every class
and would get the ordinary loss: there the sharded code path is forced, one block
through the collectives against the ordinary loss."""

import json
from typing import Dict, List

import pytest
import sharded_worker as worker
import torch
import torch.multiprocessing as mp

from espnet_plugin_intertopk import ArcMarginProduct_intertopk_subcenter as Loss

from conftest import NO_CPU_COMPILER

CASES: List[Dict] = [
    dict(margin=0.2, k_top=3),  # with 3 ranks: blocks of 2 classes, fewer than k_top
    dict(margin=0.0, k_top=3),
    dict(margin=0.2, k_top=0),
    dict(margin=0.3, do_lm=True),
    dict(margin=0.2, k_top=2, class_chunk_size=2),
    dict(margin=0.2, k_top=2, easy_margin=True, scale=16.0),
]
if not NO_CPU_COMPILER:  # the fused C++ kernels, with one coefficient per row
    CASES.append(dict(margin=0.2, k_top=3, compile_kernels=True))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Dict[str, List[str]]:
    """Every job's failures, by job and group size, over all ranks."""
    workdir = tmp_path_factory.mktemp("sharded")
    mp.spawn(worker.main, args=(3, str(workdir), CASES), nprocs=3)
    merged: Dict[str, List[str]] = {}
    for rank in range(3):
        for job, errors in json.loads(
            (workdir / f"result{rank}.json").read_text()
        ).items():
            merged.setdefault(job, []).extend(errors)
    return merged


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sharded_loss_equals_data_parallel_unsharded(results, world):
    """Loss, accuracy, predictions (with and without labels), embedding gradient and
    the block's weight gradient, within 1e-5 relative, for every case."""
    assert results[f"equivalence[{world}]"] == []


def test_checkpoints_hold_the_full_weight_and_clipping_spans_the_shards(results):
    assert results["checkpoint_and_clip[2]"] == []


def test_ranks_that_disagree_on_the_classes_are_refused(results):
    assert results["disagreeing_ranks[2]"] == []


def test_without_a_process_group_it_is_the_ordinary_loss():
    loss = Loss(8, 7, K=3, shard_classes=True)
    assert loss.class_range == (0, 7) and loss.shard is None
    assert loss.weight.shape == (21, 8)
    with pytest.raises(
        ValueError, match=r"weight in the checkpoint has shape \(20, 8\)"
    ):
        loss.load_state_dict({"weight": torch.zeros(20, 8)})
