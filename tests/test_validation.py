"""The plugin's validation (each validation utterance loaded and embedded once per
epoch) against ESPnet's SpkTrainer method and against slow per-trial references.

The ESPnet runs of test_espnet_training compare the two methods' statistics over
whole training runs; here the same model is validated both ways in one process,
with ESPnet's real dataset, preprocessor and iterator factories, counting the audio
each method loads.
"""

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from espnet2.train.distributed_utils import DistributedOption
from espnet2.utils.eer import ComputeErrorRates, ComputeMinDcf, tuneThresholdfromScore

from espnet_plugin_intertopk.recipe.kaldi_data import read_map
from espnet_plugin_intertopk.safe_io.errors import UserError
from espnet_plugin_intertopk.train.loss_options import split_loss_options
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask
from espnet_plugin_intertopk.train.trainer import validation_stats
from espnet_plugin_intertopk.train.validation import (
    SCORE_CHUNK,
    TrialValidation,
    error_rates,
    split_trial,
    trial_scores,
    unique_utterances,
    verification_stats,
)

from conftest import train_command

STATS = ("eer", "mindcf", "n_trials", "trg_mean", "trg_std", "nontrg_std")


def test_unique_utterances_in_order_of_first_appearance():
    keys = ["a*b", "b*c", "c*a", "d*b"]
    assert unique_utterances(keys) == [
        ("a", "a*b", "speech"),
        ("b", "a*b", "speech2"),
        ("c", "b*c", "speech2"),
        ("d", "d*b", "speech"),
    ]


@pytest.mark.parametrize("key", ["ab", "a*b*c", "*b", "a*"])
def test_malformed_trial_key_is_refused(key):
    with pytest.raises(ValueError, match="uttA\\*uttB"):
        split_trial(key)


def test_scores_are_espnets_per_trial_distance():
    """ESPnet's validation scores one trial at a time: -mean(cdist(e1, e2)) over the
    crops; the chunked computation gives the same numbers (also across chunks)."""
    gen = torch.Generator().manual_seed(0)
    table = torch.nn.functional.normalize(torch.randn(100, 3, 8, generator=gen), dim=2)
    pairs = torch.tensor(list(itertools.combinations(range(100), 2)))
    assert len(pairs) > SCORE_CHUNK  # more than one chunk
    expected = [-torch.cdist(table[a], table[b]).mean().item() for a, b in pairs]
    np.testing.assert_allclose(trial_scores(table, pairs), expected, rtol=1e-6)


def test_error_rates_equal_espnets_loop():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=500), 1).astype(np.float32)  # many ties
    labels = (rng.random(500) < 0.3).astype(np.int32)
    fnrs, fprs, thresholds = error_rates(scores, labels)
    want = ComputeErrorRates(scores, labels)
    assert fnrs.tolist() == list(want[0])
    assert fprs.tolist() == list(want[1])
    assert thresholds.tolist() == list(want[2])


def test_stats_against_hand_computed_values():
    # Targets 0.9, 0.2; non-targets 0.5, 0.1, 0.0: any threshold in (0.2, 0.5]
    # misses one of two targets (50 %) and accepts one non-target at most (33 %);
    # the EER point is where both rates cross: 1/3 or 1/2 by ESPnet's interpolation.
    scores = np.array([0.9, 0.5, 0.2, 0.1, 0.0], dtype=np.float32)
    labels = np.array([1, 0, 1, 0, 0], dtype=np.int32)
    stats = verification_stats(scores, labels)
    assert stats["n_trials"] == 5
    assert stats["trg_mean"] == pytest.approx(0.55)
    assert stats["trg_std"] == pytest.approx(0.35)
    assert stats["nontrg_mean"] == pytest.approx(0.2)
    assert stats["nontrg_std"] == pytest.approx(np.sqrt(((0.3**2) + 0.01 + 0.04) / 3))
    assert 100 / 3 - 1e-6 <= stats["eer"] <= 50 + 1e-6
    # The same functions ESPnet's validation calls, on the same arrays.
    assert stats["eer"] == tuneThresholdfromScore(scores, labels, [1, 0.1])[1]
    fnrs, fprs, th = ComputeErrorRates(scores, labels)
    assert stats["mindcf"] == ComputeMinDcf(fnrs, fprs, th, 0.05, 1, 1)[0]


def test_labels_other_than_0_1_are_refused():
    with pytest.raises(ValueError, match="0 or 1"):
        verification_stats(np.zeros(3, np.float32), np.array([0, 1, 2]))


class _Counting(dict):
    """A loader that counts reads (ESPnet's loaders are mappings)."""

    def __init__(self, loader, counter):
        super().__init__()
        self.loader, self.counter = loader, counter

    def __getitem__(self, key):
        self.counter[0] += 1
        return self.loader[key]

    def __contains__(self, key):
        return key in self.loader

    def keys(self):
        return self.loader.keys()

    def __iter__(self):
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


def _validate(args, model, unique: bool):
    """Validate ``model`` as the plugin's trainer does in a run with the given
    --valid_unique_utterances; return the statistics and the audio reads."""
    args.valid_unique_utterances = unique
    factory = IntertopkSpeakerTask.build_iter_factory(
        args, DistributedOption(distributed=False), "valid"
    )
    dataset = factory.base.dataset if unique else factory.dataset
    reads = [0]
    for side in ("speech", "speech2"):
        dataset.loader_dict[side] = _Counting(dataset.loader_dict[side], reads)
    iterator = factory.build_iter(1)
    assert isinstance(iterator, TrialValidation) == unique
    return validation_stats(args, model, iterator), reads[0]


@pytest.mark.slow
def test_same_model_same_stats_each_utterance_loaded_once(tiny_corpus, tmp_path):
    cmd = train_command(tiny_corpus, tmp_path / "exp")[2:]
    args = IntertopkSpeakerTask.get_parser().parse_args(cmd)
    split_loss_options(args)
    torch.manual_seed(0)
    model = IntertopkSpeakerTask.build_model(args)
    espnet, espnet_reads = _validate(args, model, unique=False)
    plugin, plugin_reads = _validate(args, model, unique=True)
    keys = list(read_map(Path(tiny_corpus) / "valid" / "trial_label"))
    n_utts = len({u for k in keys for u in k.split("*")})
    assert plugin_reads == n_utts
    assert espnet_reads == 4 * len(keys)  # both sides, both passes
    for key in STATS:
        assert plugin[key] == pytest.approx(espnet[key], rel=1e-5, abs=1e-6), key
    assert espnet["nontrg_mean"] == espnet["nontrg_std"]  # ESPnet 202511's slip
    assert plugin["nontrg_mean"] < 0
    # DataLoader workers load the utterances in other processes: same statistics.
    args.num_workers = 2
    with_workers, _ = _validate(args, model, unique=True)
    assert with_workers == plugin
    assert set(plugin) == set(espnet) == set(STATS) | {"nontrg_mean"}


@pytest.mark.slow
def test_one_utterance_with_two_audio_files_is_refused(tiny_corpus, tmp_path):
    valid = tmp_path / "valid"
    shutil.copytree(Path(tiny_corpus) / "valid", valid)
    lines = (valid / "trial2.scp").read_text().splitlines()
    key, wav = lines[0].split()
    other = next(w for k, w in (x.split() for x in lines) if w != wav)
    lines[0] = f"{key} {other}"
    (valid / "trial2.scp").write_text("\n".join(lines) + "\n")
    cmd = train_command(tiny_corpus, tmp_path / "exp")[2:]
    old = f"{Path(tiny_corpus) / 'valid'}/"
    cmd = [c.replace(old, f"{valid}/") for c in cmd]
    args = IntertopkSpeakerTask.get_parser().parse_args(cmd)
    with pytest.raises(UserError, match=f"{key.split('*')[1]} has two audio files"):
        IntertopkSpeakerTask.build_iter_factory(
            args, DistributedOption(distributed=False), "valid"
        )


def test_a_rank_without_utterances_embeds_one_again():
    """With more ranks than utterances every rank still embeds (and so joins the
    collectives of DDP's first forward)."""
    from espnet_plugin_intertopk.train.validation import UniqueUtteranceIterFactory

    class Base:
        dataset = type("D", (), {"loader_dict": {"spk_labels": {"a*b": "0"}}})()
        sampler = [["a*b"]]
        num_workers, pin_memory, collate_fn = 0, False, None

    factory = UniqueUtteranceIterFactory.__new__(UniqueUtteranceIterFactory)
    factory.__dict__.update(
        base=Base(), rank=2, world_size=3, items=unique_utterances(["a*b"]),
        pairs=torch.tensor([[0, 1]]), labels=np.array([0]), batch_size=1,
    )  # fmt: skip
    assert len(factory.build_iter(1).loader.dataset) == 1
