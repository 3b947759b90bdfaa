"""An untrained floor for the results table: per-utterance MFCC mean and standard
deviation, standardised with statistics of the training set, scored by cosine.

``python -m espnet_plugin_intertopk.recipe.mfcc_floor --train_dir data/train
--test_dir data/test --out exp/mfcc_floor/test_embeddings.npz`` writes one vector per
test utterance, in the format of ESPnet's embedding extraction, atomically and never
into an input directory. A user's mistake is one line on stderr: exit status 2 for the
command line, 1 for the data.
"""

import argparse
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from espnet_plugin_intertopk.recipe.kaldi_data import read_map
from espnet_plugin_intertopk.safe_io import atomic
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly
from espnet_plugin_intertopk.safe_io.ownership import check_apart

PROG = "python -m espnet_plugin_intertopk.recipe.mfcc_floor"
SAMPLE_RATE = 16000


def mfcc_stats(paths, transform) -> np.ndarray:
    """(N, 2 * n_mfcc) mean and standard deviation of the MFCCs of each file."""
    out = []
    for path in tqdm(paths, desc="MFCC statistics", unit="utt"):
        try:
            audio, rate = soundfile.read(path, dtype="float32")
        except Exception as err:  # noqa: BLE001 - any reader error: unusable audio
            raise UserError(f"{path}: cannot read it: {err}") from None
        if rate != SAMPLE_RATE or audio.ndim != 1 or not len(audio):
            raise UserError(
                f"{path}: {rate} Hz, shape {audio.shape}; the floor needs 16 kHz mono "
                "audio with samples"
            )
        feats = transform(torch.from_numpy(audio)).T.numpy()  # (frames, n_mfcc)
        out.append(np.concatenate([feats.mean(0), feats.std(0)]))
    return np.stack(out)


@exits_cleanly(PROG)
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n")[0])
    parser.add_argument("--train_dir", type=Path, required=True)
    parser.add_argument("--test_dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="an .npz file")
    parser.add_argument("--n_mfcc", type=int, default=20)
    args = parser.parse_args(argv)
    if not 1 <= args.n_mfcc <= 40:  # at most the 40 mel bands
        raise UserError(f"--n_mfcc must be in [1, 40], got {args.n_mfcc}", status=2)
    if args.out.suffix != ".npz" or args.out.is_dir():
        raise UserError(f"--out {args.out} must be an .npz file", status=2)
    check_apart(args.out, [args.train_dir, args.test_dir], "--out")
    for data_dir in (args.train_dir, args.test_dir):
        if not (data_dir / "wav.scp").is_file():
            raise UserError(f"{data_dir / 'wav.scp'}: no such file")
    transform = torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE,
        n_mfcc=args.n_mfcc,
        melkwargs=dict(n_fft=512, win_length=400, hop_length=160, n_mels=40),
    )
    train = mfcc_stats(sorted(read_map(args.train_dir / "wav.scp").values()), transform)
    mean, std = train.mean(0), train.std(0) + 1e-8
    test_wavs = read_map(args.test_dir / "wav.scp")
    test = mfcc_stats(list(test_wavs.values()), transform)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic.save_npz(args.out, **{u: (v - mean) / std for u, v in zip(test_wavs, test)})


if __name__ == "__main__":
    main()
