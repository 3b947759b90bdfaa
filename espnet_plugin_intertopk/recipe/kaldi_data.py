"""Kaldi-style data directories for ESPnet's speaker task: checks and shape files.

A training directory needs ``wav.scp``, ``utt2spk`` and ``spk2utt``; a test directory
needs ``wav.scp``, ``trial.scp``, ``trial2.scp`` and ``trial_label``. ``category2utt``
(what ESPnet's category iterator reads) is written from ``spk2utt`` when missing.
Shape files (``<key> <num_samples>``) are what ESPnet's batch samplers read; for trials
the key is the trial key and the length is that of the first utterance.
"""

import argparse
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterable

import soundfile

REQUIRED = {
    "train": ("wav.scp", "utt2spk", "spk2utt"),
    "test": ("wav.scp", "trial.scp", "trial2.scp", "trial_label"),
}


class DataDirError(ValueError):
    """A data directory the recipe cannot use; the message names the file."""


def _read_map(path: Path) -> Dict[str, str]:
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataDirError(f"{path}:{n}: expected '<key> <value>', got {line!r}")
        out[parts[0]] = parts[1]
    return out


def check_data_dir(data_dir: Path, kind: str) -> None:
    """Raise DataDirError naming the first missing or inconsistent file."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: no such directory")
    for name in REQUIRED[kind]:
        if not (data_dir / name).is_file():
            raise DataDirError(
                f"{data_dir / name}: required file is missing ({kind} data)"
            )
    wavs = _read_map(data_dir / "wav.scp")
    if kind == "train":
        utt2spk = _read_map(data_dir / "utt2spk")
        missing = sorted(set(utt2spk) - set(wavs))
        if missing:
            raise DataDirError(
                f"{data_dir / 'utt2spk'}: {missing[0]} has no entry in wav.scp"
            )
        if not (data_dir / "category2utt").exists():
            shutil.copyfile(data_dir / "spk2utt", data_dir / "category2utt")
    else:
        labels = _read_map(data_dir / "trial_label")
        for key, value in labels.items():
            if value not in ("0", "1"):
                raise DataDirError(
                    f"{data_dir / 'trial_label'}: {key} has label {value!r}, not 0/1"
                )
        for name in ("trial.scp", "trial2.scp"):
            if set(_read_map(data_dir / name)) != set(labels):
                raise DataDirError(f"{data_dir / name}: keys differ from trial_label")


def _num_samples(paths: Iterable[str]) -> Dict[str, int]:
    return {p: soundfile.info(p).frames for p in paths}


def write_shape_file(scp: Path, out: Path) -> None:
    """``<key> <num_samples>`` for every entry of a wav.scp-like file."""
    entries = _read_map(Path(scp))
    lengths = _num_samples(sorted(set(entries.values())))
    Path(out).write_text("".join(f"{k} {lengths[p]}\n" for k, p in entries.items()))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description="Check a data directory / write shape files"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a Kaldi-style directory")
    check.add_argument("kind", choices=sorted(REQUIRED))
    check.add_argument("data_dir", type=Path)
    shape = sub.add_parser(
        "shape", help="write '<key> <num_samples>' for a wav.scp-like file"
    )
    shape.add_argument("scp", type=Path)
    shape.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            check_data_dir(args.data_dir, args.kind)
        else:
            write_shape_file(args.scp, args.out)
    except DataDirError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
