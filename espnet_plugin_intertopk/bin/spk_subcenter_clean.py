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

The output directory must be new, empty or made by this tool, and apart from every
input; a run's outputs replace the previous run's as a whole when they are complete
(see :mod:`espnet_plugin_intertopk.cleaning.outputs`). A user's mistake is one line
on stderr: exit status 2 for the command line, 1 for the data.
"""

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
from espnet2.train.collate_fn import CommonCollateFn
from espnet2.utils.types import str2bool
from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump
from tqdm import tqdm

from espnet_plugin_intertopk.cleaning import outputs
from espnet_plugin_intertopk.cleaning.report import (
    flagged,
    plot_angles,
    summarize,
    write_cleaned_dir,
    write_report,
    write_summary,
)
from espnet_plugin_intertopk.cleaning.subcenters import (
    SubcenterResult,
    SubcenterScan,
    collapse_weight,
)
from espnet_plugin_intertopk.recipe.kaldi_data import check_data_dir, read_map
from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly
from espnet_plugin_intertopk.safe_io.ownership import check_apart
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask

PROG = "python -m espnet_plugin_intertopk.bin.spk_subcenter_clean"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
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
    spk2utt = Path(train_args.spk2utt)
    if not spk2utt.is_file():
        raise UserError(
            f"{spk2utt}, the training spk2utt that the model's classes come from, is "
            "missing: the class of each sub-center cannot be named"
        )
    return list(read_map(spk2utt))


def check_arguments(args: argparse.Namespace) -> None:
    """What the command line alone can get wrong (UserError, status 2), before
    anything is read or written."""
    if not (math.isfinite(args.threshold_deg) and 0 < args.threshold_deg < 180):
        raise UserError(
            f"--threshold_deg must be an angle in (0, 180) degrees, got "
            f"{args.threshold_deg}",
            status=2,
        )
    for option, value, least in (
        ("--batch_size", args.batch_size, 1),
        ("--class_chunk_size", args.class_chunk_size, 1),
        ("--num_workers", args.num_workers, 0),
        ("--ngpu", args.ngpu, 0),
    ):
        if value < least:
            raise UserError(f"{option} must be >= {least}, got {value}", status=2)
    for option, path, kind in (
        ("--spk_train_config", args.spk_train_config, "file"),
        ("--spk_model_file", args.spk_model_file, "file"),
        ("--data_dir", args.data_dir, "directory"),
    ):
        if not (path.is_file() if kind == "file" else path.is_dir()):
            raise UserError(f"{option} {path}: no such {kind}", status=2)
    inputs = [args.data_dir, args.spk_train_config, args.spk_model_file]
    check_apart(args.output_dir, inputs, "--output_dir")
    for name in outputs.OUTPUTS:  # one of them may be a link into an input
        check_apart(args.output_dir / name, inputs, "--output_dir")


def load_model(args: argparse.Namespace):
    device = "cuda" if args.ngpu > 0 else "cpu"
    try:
        model, train_args = IntertopkSpeakerTask.build_model_from_file(
            args.spk_train_config, args.spk_model_file, device
        )
    except Exception as err:  # noqa: BLE001 - any loading error: the files are unusable
        raise UserError(
            f"cannot load a model from --spk_train_config {args.spk_train_config} and "
            f"--spk_model_file {args.spk_model_file}: {type(err).__name__}: "
            + str(err).replace("\n", " ")
        ) from err
    return model.eval(), train_args, device


def read_data_dir(data_dir: Path, names: List[str]):
    """wav.scp and utt2spk of a training directory whose speakers the model knows."""
    check_data_dir(data_dir, "train")
    wavs, utt2spk = read_map(data_dir / "wav.scp"), read_map(data_dir / "utt2spk")
    if set(wavs) != set(utt2spk):
        raise UserError(f"{data_dir}: wav.scp lists utterances utt2spk does not")
    unknown = sorted(set(utt2spk.values()) - set(names))
    if unknown:
        raise UserError(
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
    atomic.save_torch(states, out / "model.pth")
    atomic.write_text(
        out / "config.yaml", yaml_no_alias_safe_dump(config, sort_keys=False)
    )


def scan_data(
    model, args: argparse.Namespace, device: str, labels: Dict[str, int]
) -> Tuple[List[str], SubcenterResult]:
    """Embed every utterance of ``--data_dir`` and scan it against the sub-centers;
    returns the utterances in the order of the result's rows."""
    scan = SubcenterScan(model.loss.weight, model.loss.K, args.class_chunk_size)
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
    batches = math.ceil(len(labels) / args.batch_size)
    with torch.no_grad():
        for keys, batch in tqdm(loader, total=batches, desc="embedding", unit="batch"):
            speech = batch["speech"].to(device)
            if speech.dim() == 3:  # (B, T, channels): the first channel
                speech = speech[..., 0]
            lengths = batch["speech_lengths"].to(device)
            emb = model(speech=speech, speech_lengths=lengths, extract_embd=True)
            bad = [
                k for k, ok in zip(keys, torch.isfinite(emb).all(1).tolist()) if not ok
            ]
            if bad:
                raise UserError(
                    f"the model's embedding of {bad[0]} ({args.data_dir / 'wav.scp'}) "
                    "has NaN or Inf values: check its audio"
                )
            scan.add(emb, torch.tensor([labels[k] for k in keys]))
            utts.extend(keys)
    return utts, scan.result()


@exits_cleanly(PROG)
def main(cmd: Optional[List[str]] = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s",
    )
    args = get_parser().parse_args(cmd)
    check_arguments(args)
    model, train_args, device = load_model(args)
    loss = model.loss
    K = getattr(loss, "K", None)
    if K is None:
        raise UserError(f"{type(loss).__name__} has no sub-centers (K)")
    names = class_names(train_args)
    if len(names) * K != loss.weight.shape[0]:
        raise UserError(
            f"the training spk2utt lists {len(names)} speakers, the loss has "
            f"{loss.weight.shape[0] // K} classes"
        )
    wavs, utt2spk = read_data_dir(args.data_dir, names)
    label = {n: i for i, n in enumerate(names)}
    out = args.output_dir
    build = outputs.start(out)
    try:
        utts, result = scan_data(
            model, args, device, {u: label[s] for u, s in utt2spk.items()}
        )
        drop = flagged(result, args.threshold_deg)
        write_report(build / "report.tsv", utts, names, result, drop)
        summary = summarize(names, result, drop, args.threshold_deg)
        write_summary(build / "summary.json", summary)
        plot_angles(build / "images" / "angles.png", result, args.threshold_deg)
        if summary["utterances_kept"] == 0:
            # The angles are there to look at, without an earlier run's data beside.
            outputs.swap_in(build, out)
            raise UserError(
                f"every utterance is more than {args.threshold_deg} degrees from its "
                f"class's dominant sub-center: nothing is left to train on (the angles "
                f"are in {out / 'report.tsv'}; an untrained model or a threshold too "
                "low)"
            )
        kept = write_cleaned_dir(build / "data", utts, names, wavs, result, drop)
        if args.collapse:
            keep = torch.tensor([label[s] for s in kept], dtype=torch.long)
            weight = collapse_weight(loss.weight.cpu(), K, result.dominant, keep)
            write_collapsed(
                build / "collapsed",
                train_args,
                args.spk_model_file,
                out / "data",
                weight,
            )
        outputs.swap_in(build, out)
    finally:
        outputs.discard(build)
    logging.info(
        "kept %d of %d utterances, %d of %d classes; report: %s",
        summary["utterances_kept"],
        summary["utterances"],
        summary["classes_kept"],
        summary["classes"],
        out / "report.tsv",
    )


if __name__ == "__main__":
    main(sys.argv[1:])
