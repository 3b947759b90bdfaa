"""``python -m espnet_plugin_intertopk.bin.spk_subcenter_clean``: find mislabeled
training utterances with the sub-centers of a trained ``aamsoftmax_sc_topk`` model.

Embeds every utterance of ``--data_dir`` (whole utterances, through ESPnet's data
loading; with ``--batch_size`` > 1 a batch is zero-padded and its lengths passed to the
model, but ESPnet's frontends still see some padding: angles then move by a few
hundredths of a degree), finds each class's
dominant sub-center (the one most of its utterances are closest to) and flags the
utterances whose angle to it exceeds ``--threshold_deg``. Writes under
``--output_dir``: ``report.tsv``, ``summary.json``, ``images/angles.png`` and
``data/`` (the data directory without the flagged utterances and without classes
left empty). With ``--collapse true`` also ``collapsed/``: a checkpoint and config
whose loss keeps only each kept class's dominant sub-center (K = 1), to continue
training on ``data/`` or to use as a plain ArcFace head. ``--data_dir`` is only read.
"""

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import List, Optional

import torch
from espnet2.train.collate_fn import CommonCollateFn
from espnet2.utils.types import str2bool
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump
from tqdm import tqdm

from espnet_plugin_intertopk.cleaning.report import (
    flagged,
    plot_angles,
    summarize,
    write_cleaned_dir,
    write_report,
    write_summary,
)
from espnet_plugin_intertopk.cleaning.subcenters import SubcenterScan, collapse_weight
from espnet_plugin_intertopk.recipe.kaldi_data import check_data_dir, read_map
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--spk_train_config", required=True, type=Path)
    parser.add_argument("--spk_model_file", required=True, type=Path)
    parser.add_argument(
        "--data_dir", required=True, type=Path, help="wav.scp, utt2spk, spk2utt"
    )
    parser.add_argument("--output_dir", required=True, type=Path)
    parser.add_argument(
        "--threshold_deg",
        type=float,
        default=75.0,
        help="flag utterances farther than this from their class's dominant "
        "sub-center (Sub-center ArcFace's 75 degrees)",
    )
    parser.add_argument("--ngpu", type=int, default=0)
    parser.add_argument(
        "--batch_size", type=int, default=1, help="> 1 pads (see the description)"
    )
    parser.add_argument("--num_workers", type=int, default=0)
    parser.add_argument(
        "--class_chunk_size",
        type=int,
        default=32768,
        help="classes compared at a time (memory ~ batch x chunk x K)",
    )
    parser.add_argument("--collapse", type=str2bool, default=False)
    return parser


def class_names(train_args: argparse.Namespace) -> List[str]:
    """The class of each loss row, in the order ESPnet's preprocessor numbered them
    (the lines of the training spk2utt)."""
    return list(read_map(Path(train_args.spk2utt)))


def read_data_dir(data_dir: Path, names: List[str]):
    """wav.scp and utt2spk of a training directory whose speakers the model knows."""
    check_data_dir(data_dir, "train")
    wavs, utt2spk = read_map(data_dir / "wav.scp"), read_map(data_dir / "utt2spk")
    if set(wavs) != set(utt2spk):
        raise ValueError(f"{data_dir}: wav.scp lists utterances utt2spk does not")
    unknown = sorted(set(utt2spk.values()) - set(names))
    if unknown:
        raise ValueError(
            f"{data_dir}/utt2spk has speakers the model was not trained on, e.g. "
            f"{unknown[:5]}"
        )
    return wavs, utt2spk


def write_collapsed(
    out: Path,
    train_args: argparse.Namespace,
    model_file: Path,
    cleaned: Path,
    weight: torch.Tensor,
) -> None:
    """model.pth and config.yaml: the trained model with a K = 1 loss (``weight``, one
    row per class of ``cleaned``), set to train on ``cleaned``."""
    nclasses = weight.shape[0]
    states = torch.load(model_file, map_location="cpu", weights_only=False)
    states["loss.weight"] = weight
    config = dict(vars(train_args))
    config["loss_conf"] = {**config["loss_conf"], "K": 1}
    if config["loss_conf"].get("k_top", 0) >= nclasses:
        config["loss_conf"]["k_top"] = nclasses - 1
    config["spk_num"] = nclasses
    config["spk2utt"] = str(cleaned / "spk2utt")
    config["train_data_path_and_name_and_type"] = [
        [str(cleaned / "wav.scp"), "speech", "sound"],
        [str(cleaned / "utt2spk"), "spk_labels", "text"],
    ]
    out.mkdir(parents=True, exist_ok=True)
    torch.save(states, out / "model.pth")
    (out / "config.yaml").write_text(yaml_no_alias_safe_dump(config, sort_keys=False))


def main(cmd: Optional[List[str]] = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s",
    )
    args = get_parser().parse_args(cmd)
    device = "cuda" if args.ngpu > 0 else "cpu"
    model, train_args = IntertopkSpeakerTask.build_model_from_file(
        args.spk_train_config, args.spk_model_file, device
    )
    model.eval()
    loss = model.loss
    K = getattr(loss, "K", None)
    if K is None:
        raise ValueError(f"{type(loss).__name__} has no sub-centers (K)")
    names = class_names(train_args)
    if len(names) * K != loss.weight.shape[0]:
        raise ValueError(
            f"the training spk2utt lists {len(names)} speakers, the loss has "
            f"{loss.weight.shape[0] // K} classes"
        )
    wavs, utt2spk = read_data_dir(args.data_dir, names)
    label = {n: i for i, n in enumerate(names)}
    scan = SubcenterScan(loss.weight, K, args.class_chunk_size)
    loader = IntertopkSpeakerTask.build_streaming_iterator(
        [(str(args.data_dir / "wav.scp"), "speech", "sound")],
        preprocess_fn=None,
        collate_fn=CommonCollateFn(float_pad_value=0.0, int_pad_value=-1),
        batch_size=args.batch_size,
        dtype="float32",
        num_workers=args.num_workers,
        ngpu=args.ngpu,
        inference=True,
    )
    utts: List[str] = []
    batches = math.ceil(len(wavs) / args.batch_size)
    with torch.no_grad():
        for keys, batch in tqdm(loader, total=batches, desc="embedding", unit="batch"):
            speech = batch["speech"].to(device)
            if speech.dim() == 3:  # (B, T, channels): the first channel
                speech = speech[..., 0]
            lengths = batch["speech_lengths"].to(device)
            emb = model(speech=speech, speech_lengths=lengths, extract_embd=True)
            scan.add(emb, torch.tensor([label[utt2spk[k]] for k in keys]))
            utts.extend(keys)
    result = scan.result()
    drop = flagged(result, args.threshold_deg)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    write_report(out / "report.tsv", utts, names, result, drop)
    summary = summarize(names, result, drop, args.threshold_deg)
    write_summary(out / "summary.json", summary)
    plot_angles(out / "images" / "angles.png", result, args.threshold_deg)
    if summary["utterances_kept"] == 0:
        raise ValueError(
            f"every utterance is more than {args.threshold_deg} degrees from its "
            f"class's dominant sub-center: nothing is left to train on (the angles "
            f"are in {out / 'report.tsv'}; an untrained model or a threshold too low)"
        )
    kept = write_cleaned_dir(out / "data", utts, names, wavs, result, drop)
    logging.info(
        "kept %d of %d utterances, %d of %d classes; report: %s",
        summary["utterances_kept"],
        summary["utterances"],
        summary["classes_kept"],
        summary["classes"],
        out / "report.tsv",
    )
    if args.collapse:
        keep = torch.tensor([label[s] for s in kept], dtype=torch.long)
        weight = collapse_weight(loss.weight.cpu(), K, result.dominant, keep)
        write_collapsed(
            out / "collapsed", train_args, args.spk_model_file, out / "data", weight
        )


if __name__ == "__main__":
    main(sys.argv[1:])
