"""Kaldi-style data directories for ESPnet's speaker task: checks, trial lists, shape
files. Input directories are only read; everything is written to new paths.

A training directory needs ``wav.scp``, ``utt2spk`` and ``spk2utt``; a trial directory
(validation or test) needs ``wav.scp``, ``trial.scp``, ``trial2.scp`` and
``trial_label``. Shape files (``<key> <num_samples>``) are what ESPnet's batch samplers
read; for trials the key is the trial key and the length is that of the first
utterance.

Subcommands (``python -m espnet_plugin_intertopk.recipe.kaldi_data ...``): ``check``,
``shape``, ``holdout`` (move some training speakers into a validation directory with
its own trial list) and ``cohort`` (a trial-style list of training utterances, for
embedding extraction of a score-normalisation cohort).
"""

import argparse
import itertools
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import numpy as np
import soundfile

REQUIRED = {
    "train": ("wav.scp", "utt2spk", "spk2utt"),
    "test": ("wav.scp", "trial.scp", "trial2.scp", "trial_label"),
}


class DataDirError(ValueError):
    """A data directory the recipe cannot use; the message names the file."""


def read_map(path: Path) -> Dict[str, str]:
    """``<key> <value>`` lines of a Kaldi-style file."""
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataDirError(f"{path}:{n}: expected '<key> <value>', got {line!r}")
        out[parts[0]] = parts[1]
    return out


def write_lines(path: Path, lines: Iterable[str]) -> None:
    Path(path).write_text("".join(line + "\n" for line in lines))


def _check_audio(wav_scp: Path, paths: Iterable[str]) -> None:
    for path in sorted(set(paths)):
        if not Path(path).is_file():
            raise DataDirError(f"{wav_scp}: audio file {path} does not exist")
        try:
            soundfile.info(path)
        except Exception as err:  # noqa: BLE001 - any reader error: unusable
            raise DataDirError(f"{wav_scp}: cannot read {path}: {err}") from err


def check_data_dir(data_dir: Path, kind: str) -> None:
    """Raise DataDirError naming the first missing, inconsistent or unreadable file."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: no such directory")
    for name in REQUIRED[kind]:
        if not (data_dir / name).is_file():
            raise DataDirError(
                f"{data_dir / name}: required file is missing ({kind} data)"
            )
    wavs = read_map(data_dir / "wav.scp")
    if kind == "train":
        utt2spk = read_map(data_dir / "utt2spk")
        missing = sorted(set(utt2spk) - set(wavs))
        if missing:
            raise DataDirError(
                f"{data_dir / 'utt2spk'}: {missing[0]} has no entry in wav.scp"
            )
        speakers = set(utt2spk.values())
        if len(speakers) < 2:
            raise DataDirError(
                f"{data_dir / 'utt2spk'}: {len(speakers)} speaker(s); speaker training "
                "needs at least 2"
            )
        _check_audio(data_dir / "wav.scp", (wavs[u] for u in utt2spk))
    else:
        labels = read_map(data_dir / "trial_label")
        for key, value in labels.items():
            if value not in ("0", "1"):
                raise DataDirError(
                    f"{data_dir / 'trial_label'}: {key} has label {value!r}, not 0/1"
                )
        for name in ("trial.scp", "trial2.scp"):
            paths = read_map(data_dir / name)
            if set(paths) != set(labels):
                raise DataDirError(f"{data_dir / name}: keys differ from trial_label")
            _check_audio(data_dir / name, paths.values())


def make_trials(
    utts: Dict[str, List[str]], max_target: int, nontarget_ratio: float, rng
) -> List[Tuple[str, str, int]]:
    """Trials ``(uttA, uttB, label)`` from utterances grouped by speaker, no pair twice.

    Args:
        utts: speaker -> utterances.
        max_target: at most this many target pairs (all of them if there are fewer).
        nontarget_ratio: non-target pairs per target pair (as many as exist, at most).
        rng: a numpy Generator.
    """
    spk_of = {u: s for s, us in utts.items() for u in us}
    target = [p for us in utts.values() for p in itertools.combinations(sorted(us), 2)]
    everything = sorted(spk_of)
    nontarget = [
        (a, b)
        for a, b in itertools.combinations(everything, 2)
        if spk_of[a] != spk_of[b]
    ]
    n_t = min(max_target, len(target))
    n_n = min(int(round(n_t * nontarget_ratio)), len(nontarget))
    pick_t = rng.choice(len(target), n_t, replace=False)
    pick_n = rng.choice(len(nontarget), n_n, replace=False)
    pairs = [(*target[i], 1) for i in sorted(pick_t)]
    pairs += [(*nontarget[i], 0) for i in sorted(pick_n)]
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def write_trials(out: Path, trials: List[Tuple[str, str, int]], wavs: Dict[str, str]):
    """trial.scp, trial2.scp and trial_label of ``trials`` under ``out``."""
    write_lines(out / "trial.scp", [f"{a}*{b} {wavs[a]}" for a, b, _ in trials])
    write_lines(out / "trial2.scp", [f"{a}*{b} {wavs[b]}" for a, b, _ in trials])
    write_lines(out / "trial_label", [f"{a}*{b} {lab}" for a, b, lab in trials])


def write_speaker_dir(out: Path, utts: Dict[str, List[str]], wavs: Dict[str, str]):
    """wav.scp, utt2spk, spk2utt and category2utt (what ESPnet's category iterator
    reads) of the given speakers' utterances under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    spk_of = {u: s for s, us in utts.items() for u in us}
    all_utts = sorted(spk_of)
    write_lines(out / "wav.scp", [f"{u} {wavs[u]}" for u in all_utts])
    write_lines(out / "utt2spk", [f"{u} {spk_of[u]}" for u in all_utts])
    spk2utt = [f"{s} {' '.join(sorted(us))}" for s, us in sorted(utts.items())]
    write_lines(out / "spk2utt", spk2utt)
    write_lines(out / "category2utt", spk2utt)


def _speakers(data_dir: Path) -> Dict[str, List[str]]:
    return {s: u.split() for s, u in read_map(data_dir / "spk2utt").items()}


def holdout(
    train_dir: Path,
    out_train: Path,
    out_valid: Path,
    n_speakers: int,
    n_trials: int,
    seed: int,
) -> None:
    """Split ``train_dir`` by speaker: ``n_speakers`` drawn at random go to
    ``out_valid`` with a balanced trial list of about ``n_trials``; the rest to
    ``out_train``."""
    speakers = _speakers(train_dir)
    if n_speakers < 2 or len(speakers) - n_speakers < 2:
        raise DataDirError(
            f"{train_dir}: {len(speakers)} speakers cannot give {n_speakers} "
            "validation speakers and keep 2 or more for training (need >= 2 on each "
            "side)"
        )
    rng = np.random.default_rng(seed)
    held = set(rng.choice(sorted(speakers), n_speakers, replace=False).tolist())
    wavs = read_map(train_dir / "wav.scp")
    write_speaker_dir(
        out_train, {s: u for s, u in speakers.items() if s not in held}, wavs
    )
    valid = {s: u for s, u in speakers.items() if s in held}
    write_speaker_dir(out_valid, valid, wavs)
    write_trials(out_valid, make_trials(valid, n_trials // 2, 1.0, rng), wavs)


def cohort_list(train_dir: Path, out: Path, per_speaker: int) -> None:
    """A trial-style directory listing up to ``per_speaker`` utterances of every
    training speaker (key ``u*u``: ESPnet's extraction embeds each utterance once),
    with their utt2spk."""
    speakers = _speakers(train_dir)
    wavs = read_map(train_dir / "wav.scp")
    chosen = {s: sorted(u)[:per_speaker] for s, u in speakers.items()}
    out.mkdir(parents=True, exist_ok=True)
    write_trials(out, [(u, u, 1) for us in chosen.values() for u in us], wavs)
    write_lines(out / "utt2spk", [f"{u} {s}" for s, us in chosen.items() for u in us])


def _num_samples(paths: Iterable[str]) -> Dict[str, int]:
    return {p: soundfile.info(p).frames for p in paths}


def write_shape_file(scp: Path, out: Path) -> None:
    """``<key> <num_samples>`` for every entry of a wav.scp-like file."""
    entries = read_map(Path(scp))
    lengths = _num_samples(sorted(set(entries.values())))
    Path(out).write_text("".join(f"{k} {lengths[p]}\n" for k, p in entries.items()))


def copy_dir(src: Path, dst: Path) -> None:
    """The plain files of ``src`` into a fresh ``dst`` (``src`` is only read)."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for f in Path(src).iterdir():
        if f.is_file():
            shutil.copyfile(f, dst / f.name)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Kaldi-style data directory tools")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a Kaldi-style directory")
    check.add_argument("kind", choices=sorted(REQUIRED))
    check.add_argument("data_dir", type=Path)
    shape = sub.add_parser(
        "shape", help="'<key> <num_samples>' for a wav.scp-like file"
    )
    shape.add_argument("scp", type=Path)
    shape.add_argument("out", type=Path)
    copy = sub.add_parser(
        "copy", help="copy a directory's files (train: + category2utt)"
    )
    copy.add_argument("kind", choices=sorted(REQUIRED))
    copy.add_argument("src", type=Path)
    copy.add_argument("dst", type=Path)
    hold = sub.add_parser("holdout", help="split training speakers into train/valid")
    hold.add_argument("train_dir", type=Path)
    hold.add_argument("out_train", type=Path)
    hold.add_argument("out_valid", type=Path)
    hold.add_argument("--n_speakers", type=int, required=True)
    hold.add_argument("--n_trials", type=int, default=600)
    hold.add_argument("--seed", type=int, default=0)
    cohort = sub.add_parser("cohort", help="trial-style list of training utterances")
    cohort.add_argument("train_dir", type=Path)
    cohort.add_argument("out", type=Path)
    cohort.add_argument("--per_speaker", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check_data_dir(args.data_dir, args.kind)
        elif args.command == "shape":
            write_shape_file(args.scp, args.out)
        elif args.command == "copy":
            copy_dir(args.src, args.dst)
            if args.kind == "train":
                shutil.copyfile(args.dst / "spk2utt", args.dst / "category2utt")
        elif args.command == "holdout":
            holdout(
                args.train_dir,
                args.out_train,
                args.out_valid,
                args.n_speakers,
                args.n_trials,
                args.seed,
            )
        else:
            cohort_list(args.train_dir, args.out, args.per_speaker)
    except DataDirError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
