"""Validation that loads and embeds each validation utterance once per epoch.

ESPnet's ``SpkTrainer.validate_one_epoch`` walks the trial iterator twice: the first
pass loads both sides of every trial and keeps every unique utterance's crops in a
Python list, the second loads both sides again only for the labels. Here the
validation iterator yields each unique utterance of the trial list once, in batches,
through ESPnet's own dataset (its loaders and the valid preprocessor, so the crops are
those ESPnet embeds), DataLoader workers and collate function; only the embeddings
are kept, and the trials are scored from them with ESPnet's distance and ESPnet's
EER/minDCF (its error-rate sweep vectorised, same numbers).

Under ``torch.distributed`` every rank reads the whole trial list (keys and labels,
not audio) and embeds every ``world_size``-th utterance; the embeddings are
all-gathered, so every rank scores every trial and reports the same statistics.
(ESPnet's method splits the trial batches over the ranks instead, needs batches of at
least ``world_size`` trials and all-gathers the scores.)
"""

import logging
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from espnet2.fileio.read_text import read_2columns_text
from espnet2.iterators.abs_iter_factory import AbsIterFactory
from espnet2.torch_utils.device_funcs import to_device
from espnet2.utils.eer import ComputeMinDcf, tuneThresholdfromScore
from torch.utils.data import DataLoader, Dataset

from espnet_plugin_intertopk.safe_io.errors import UserError

# The names of ESPnet's speaker-validation data (trial.scp, trial2.scp, trial_label).
SIDES = ("speech", "speech2")
LABELS = "spk_labels"
# Trials scored per cdist call: bounds the (trials, crops, crops) distance tensor.
SCORE_CHUNK = 4096


def unique_utterances(keys: List[str]) -> List[Tuple[str, str, str]]:
    """``(utterance, trial key, side)`` for each utterance of the trials ``keys``
    (``uttA*uttB``), in order of first appearance; the side is the data name under
    which that trial holds the utterance's audio."""
    seen: Dict[str, Tuple[str, str, str]] = {}
    for key in keys:
        for utt, side in zip(split_trial(key), SIDES):
            seen.setdefault(utt, (utt, key, side))
    return list(seen.values())


def split_trial(key: str) -> Tuple[str, str]:
    parts = key.split("*")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"validation trial key {key!r} is not 'uttA*uttB'")
    return parts[0], parts[1]


class UniqueUtteranceDataset(Dataset):
    """One item per unique utterance: its audio through ESPnet's dataset loaders and
    preprocessor, as ESPnet's validation would have cropped it.

    Args:
        dataset: ESPnet's validation ``ESPnetDataset`` (keys are trial keys).
        items: ``(utterance, trial key, side)`` to load, from ``unique_utterances``.
    """

    def __init__(self, dataset, items: List[Tuple[str, str, str]]):
        self.dataset = dataset
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Tuple[str, Dict[str, np.ndarray]]:
        utt, key, side = self.items[index]
        loaders = self.dataset.loader_dict
        audio = np.asarray(loaders[side][key])
        # The valid preprocessor crops both sides of a trial the same way (a fixed
        # function of the audio), so one utterance passed as both gives its crops.
        data = {SIDES[0]: audio, SIDES[1]: audio, LABELS: loaders[LABELS][key]}
        if "task_tokens" in loaders:
            data["task_tokens"] = loaders["task_tokens"][key]
        if self.dataset.preprocess is not None:
            data = self.dataset.preprocess(key, data)
        out = {"speech": _as_dtype(data[SIDES[0]], self.dataset)}
        if "task_tokens" in data:
            out["task_tokens"] = _as_dtype(
                np.asarray(data["task_tokens"]), self.dataset
            )
        return utt, out


def _as_dtype(value: np.ndarray, dataset) -> np.ndarray:
    """The precision ESPnetDataset gives its arrays."""
    if value.dtype.kind == "f":
        return value.astype(dataset.float_dtype)
    return value.astype(dataset.int_dtype)


class TrialValidation:
    """One epoch's validation input: this rank's unique utterances in batches, and
    the whole trial list to score.

    Args:
        loader: this rank's utterances, in batches.
        utterances: every unique utterance of the trials.
        pairs: (trials, 2) positions in ``utterances`` of each trial's two sides.
        labels: (trials,) 1 for a target trial, 0 otherwise.
    """

    def __init__(
        self,
        loader: DataLoader,
        utterances: List[str],
        pairs: torch.Tensor,
        labels: np.ndarray,
    ):
        self.loader = loader
        self.utterances = utterances
        self.pairs = pairs
        self.labels = labels

    def __iter__(self) -> Iterator:
        return iter(self.loader)

    def __len__(self) -> int:
        return len(self.loader)


def _check_one_audio_per_utterance(dataset) -> None:
    """Refuse trial lists that give one utterance two audio files (ESPnet's method
    would embed whichever side it met first; so would this one, in another order)."""
    audio: Dict[str, Tuple[str, str]] = {}
    for index, side in enumerate(SIDES):
        path, _ = dataset.debug_info[side]
        for key, wav in read_2columns_text(path).items():
            utt = split_trial(key)[index]
            first = audio.setdefault(utt, (wav, path))
            if first[0] != wav:
                raise UserError(
                    f"validation utterance {utt} has two audio files: {first[0]} "
                    f"({first[1]}) and {wav} ({path}); each utterance id must name "
                    "one file"
                )


class UniqueUtteranceIterFactory(AbsIterFactory):
    """Wraps ESPnet's validation iterator factory: same dataset, workers and collate
    function, but each unique utterance once instead of each trial.

    Args:
        base: the ``SequenceIterFactory`` ESPnet builds for all the validation trials
            in one process.
        rank, world_size: this process's share of the utterances.
    """

    def __init__(self, base, rank: int = 0, world_size: int = 1):
        self.base = base
        self.rank = rank
        self.world_size = world_size
        self.keys = list(base.dataset.loader_dict[LABELS].keys())
        self.labels = np.array(
            [int(base.dataset.loader_dict[LABELS][k]) for k in self.keys],
            dtype=np.int32,
        )
        self.items = unique_utterances(self.keys)
        position = {utt: i for i, (utt, _, _) in enumerate(self.items)}
        self.pairs = torch.tensor(
            [[position[u] for u in split_trial(k)] for k in self.keys],
            dtype=torch.long,
        ).reshape(-1, 2)
        _check_one_audio_per_utterance(base.dataset)
        # ESPnet embeds in batches of its largest validation batch on each rank.
        largest = max((len(b) for b in base.sampler), default=1)
        self.batch_size = -(-largest // world_size)

    def build_iter(self, epoch: int, shuffle: Optional[bool] = None) -> TrialValidation:
        # A rank without utterances would still have to join the buffer broadcast
        # of DDP's first forward: it embeds the first one again.
        mine = self.items[self.rank :: self.world_size] or self.items[:1]
        loader = DataLoader(
            UniqueUtteranceDataset(self.base.dataset, mine),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=self.base.num_workers,
            collate_fn=self.base.collate_fn,
            pin_memory=self.base.pin_memory,
        )
        utterances = [utt for utt, _, _ in self.items]
        return TrialValidation(loader, utterances, self.pairs, self.labels)


def embed_utterances(
    model: torch.nn.Module, batches, device: torch.device
) -> Dict[str, torch.Tensor]:
    """Unit-length embeddings ``(num_eval, D)`` per utterance, kept on the CPU."""
    out: Dict[str, torch.Tensor] = {}
    for utts, batch in batches:
        speech = to_device(batch["speech"], device)
        n, crops = speech.shape[0], speech.shape[1]
        task_tokens = None
        if "task_tokens" in batch:
            task_tokens = to_device(batch["task_tokens"], device).reshape(n, -1)[:, :1]
            task_tokens = task_tokens.repeat_interleave(crops, dim=0)
        embd = model(
            speech=speech.flatten(0, 1),
            spk_labels=None,
            extract_embd=True,
            task_tokens=task_tokens,
        )
        embd = F.normalize(embd, p=2, dim=1).view(n, crops, -1).cpu()
        out.update(zip(utts, embd))
    return out


def gather_embeddings(embeddings: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Every rank's embeddings on every rank (the audio never leaves its rank)."""
    shares: List[Optional[Dict[str, torch.Tensor]]] = [None] * (
        torch.distributed.get_world_size()
    )
    torch.distributed.all_gather_object(shares, embeddings)
    out: Dict[str, torch.Tensor] = {}
    for share in shares:
        out.update(share)
    return out


def trial_scores(table: torch.Tensor, pairs: torch.Tensor) -> np.ndarray:
    """ESPnet's validation score of each trial: minus the mean Euclidean distance
    between the crops' unit embeddings of its two utterances.

    Args:
        table: (utterances, crops, D) unit embeddings.
        pairs: (trials, 2) rows of ``table`` of each trial's two sides.
    """
    scores = [
        -torch.cdist(table[chunk[:, 0]], table[chunk[:, 1]]).mean(dim=(1, 2))
        for chunk in pairs.split(SCORE_CHUNK)
    ]
    if not scores:
        return np.zeros(0, dtype=np.float32)
    return torch.cat(scores).to(torch.float32).numpy()


def error_rates(scores: np.ndarray, labels: np.ndarray):
    """ESPnet's ``ComputeErrorRates`` (miss and false-alarm rates at every score as
    threshold, scores in ascending order, ties in input order), without its
    per-trial Python loop: the same divisions of the same counts."""
    order = np.argsort(scores, kind="stable")
    hits = np.asarray(labels)[order].astype(np.int64)
    n_target = int(hits.sum())
    fnrs = np.cumsum(hits) / float(n_target)
    fprs = 1 - np.cumsum(1 - hits) / float(len(hits) - n_target)
    return fnrs, fprs, np.asarray(scores)[order]


def verification_stats(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    """The statistics ESPnet's validation reports, by ESPnet's functions (EER,
    minDCF at p_target 0.05); ``nontrg_mean`` is the non-target mean (ESPnet 202511
    reports their standard deviation under that name)."""
    target = scores[labels == 1]
    nontarget = scores[labels == 0]
    if len(target) + len(nontarget) != len(scores):
        raise ValueError("validation trial labels must be 0 or 1")
    if len(scores) == 1:
        # As ESPnet: a one-trial list (collect_stats' dummy) has no error rates.
        return dict(eer=1.0, mindcf=1.0)
    eer = tuneThresholdfromScore(scores, labels, [1, 0.1])[1]
    fnrs, fprs, thresholds = error_rates(scores, labels)
    mindcf, _ = ComputeMinDcf(fnrs, fprs, thresholds, 0.05, 1, 1)
    return dict(
        eer=eer,
        mindcf=mindcf,
        n_trials=len(scores),
        trg_mean=float(np.mean(target)),
        trg_std=float(np.std(target)),
        nontrg_mean=float(np.mean(nontarget)),
        nontrg_std=float(np.std(nontarget)),
    )


@torch.no_grad()
def validate_trials(
    model: torch.nn.Module, validation: TrialValidation, reporter, distributed: bool
) -> Dict[str, float]:
    """Embed this rank's utterances, gather, score every trial, report the stats."""
    model.eval()
    device = next(model.parameters()).device
    embeddings = embed_utterances(model, validation, device)
    if distributed:
        embeddings = gather_embeddings(embeddings)
    missing = [u for u in validation.utterances if u not in embeddings]
    if missing:
        raise RuntimeError(f"validation utterances not embedded: {missing[:3]}...")
    table = torch.stack([embeddings[u] for u in validation.utterances])
    scores = trial_scores(table, validation.pairs)
    stats = verification_stats(scores, validation.labels)
    logging.info(
        f"validation: {len(validation.loader.dataset)} of {len(embeddings)} "
        f"utterances embedded here, {len(scores)} trials scored"
    )
    reporter.register(stats=stats)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return stats
