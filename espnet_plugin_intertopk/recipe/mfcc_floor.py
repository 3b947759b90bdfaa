"""An untrained floor for the results table: per-utterance MFCC mean and standard
deviation, standardised with statistics of the training set, scored by cosine.

``python -m espnet_plugin_intertopk.recipe.mfcc_floor --train_dir data/train
--test_dir data/test --out exp/mfcc_floor/test_embeddings.npz`` writes one vector per
test utterance, in the format of ESPnet's embedding extraction.
"""

import argparse
from pathlib import Path

import numpy as np
import soundfile
import torch
import torchaudio
from tqdm import tqdm

from espnet_plugin_intertopk.recipe.kaldi_data import read_map

SAMPLE_RATE = 16000


def mfcc_stats(paths, transform) -> np.ndarray:
    """(N, 2 * n_mfcc) mean and standard deviation of the MFCCs of each file."""
    out = []
    for path in tqdm(paths, desc="MFCC statistics", unit="utt"):
        audio, rate = soundfile.read(path, dtype="float32")
        if rate != SAMPLE_RATE:
            raise ValueError(f"{path}: {rate} Hz, the floor expects {SAMPLE_RATE}")
        feats = transform(torch.from_numpy(audio)).T.numpy()  # (frames, n_mfcc)
        out.append(np.concatenate([feats.mean(0), feats.std(0)]))
    return np.stack(out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train_dir", type=Path, required=True)
    parser.add_argument("--test_dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n_mfcc", type=int, default=20)
    args = parser.parse_args(argv)
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
    np.savez(args.out, **{u: (v - mean) / std for u, v in zip(test_wavs, test)})


if __name__ == "__main__":
    main()
