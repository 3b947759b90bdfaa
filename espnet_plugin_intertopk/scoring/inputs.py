"""The checked inputs of scoring and calibration: trial lists, embedding files and
utterance durations. Each problem is a UserError naming the file (and line)."""

import math
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import soundfile

from espnet_plugin_intertopk.recipe.kaldi_data import read_entries
from espnet_plugin_intertopk.safe_io.errors import UserError, space_separated_names
from espnet_plugin_intertopk.scoring.normalisation import unit_embeddings


def names_among(text: str, option: str, allowed: Iterable[str], of: str) -> List[str]:
    """The space-separated names of ``option``, each one of ``allowed`` (``of`` names
    them in the message; UserError, status 2)."""
    names = space_separated_names(text, option)
    for name in names:
        if name not in allowed:
            raise UserError(f"{option} {text!r}: {name} is not one of {of}", status=2)
    return names


def check_paths_exist(named: Dict[str, Optional[Path]]) -> None:
    """Each given path of option -> path exists (UserError, status 2)."""
    for option, path in named.items():
        if path is not None and not path.exists():
            raise UserError(f"{option} {path}: no such file or directory", status=2)


class Trials:
    """The trials of a ``trial_label`` file (``<uttA>*<uttB> <0|1>`` lines), checked:
    well-formed lines, each trial once (in either order), both kinds of trials
    (``needs`` says what for, in the message).

    Attributes:
        pairs: (uttA, uttB) per trial; labels: (T,) 0/1; lines: line of each trial.
    """

    def __init__(self, path: Path, needs: str = "EER and minDCF"):
        self.path = path
        self.pairs: List[Tuple[str, str]] = []
        self.lines: List[int] = []
        labels, seen = [], {}
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1"):
                raise UserError(
                    f"{path}:{n}: expected '<uttA>*<uttB> <0|1>', got {line!r}"
                )
            key, label = parts
            pair = tuple(key.split("*"))
            if len(pair) != 2 or not all(pair):
                raise UserError(f"{path}:{n}: trial key {key!r} is not <uttA>*<uttB>")
            first = seen.setdefault(frozenset(pair), n)
            if first != n:
                raise UserError(
                    f"{path}:{n}: trial {key} repeats the trial of line {first}; list "
                    "each trial once"
                )
            self.pairs.append(pair)
            self.lines.append(n)
            labels.append(int(label))
        self.labels = np.array(labels, dtype=int)
        check_both_classes(self.labels, str(path), needs)

    def where(self, i: int) -> str:
        """Trial ``i`` and its place, for messages."""
        return f"trial {'*'.join(self.pairs[i])} ({self.path}:{self.lines[i]})"


def check_both_classes(labels: np.ndarray, what: str, needs: str) -> None:
    """UserError unless ``labels`` has target (1) and non-target (0) trials."""
    if len(set(labels.tolist())) < 2:
        kinds = "no trials"
        if len(labels):
            kinds = f"all {len(labels)} trials are {'non-' * int(labels[0] == 0)}target"
        raise UserError(
            f"{what}: {kinds}: {needs} need both target (1) and non-target (0) trials"
        )


class Embeddings(NamedTuple):
    """An embedding file's utterances: unit vectors and the raw length (the mean
    length of an utterance's crops), a quality measure of calibration."""

    unit: Dict[str, np.ndarray]
    norm: Dict[str, float]


def load_embeddings(path: Path, what: str) -> Embeddings:
    """The embeddings of an .npz file; UserError naming ``path`` and ``what`` (the
    model and seed) when it is missing, unreadable, or holds an embedding of another
    size, with NaN/Inf values or of zero length."""
    if not path.is_file():
        raise UserError(f"{path}: no such file ({what}); extract its embeddings first")
    try:
        npz = np.load(path)
        if not hasattr(npz, "files"):
            raise ValueError("not an .npz archive")
        with npz:
            raw = {key: np.asarray(npz[key], dtype=np.float64) for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: cannot read it ({what}): {err}") from None
    first = {}
    for key, v in raw.items():
        if v.ndim not in (1, 2) or v.size == 0:
            raise UserError(
                f"{path}: {key} has an embedding of shape {v.shape} ({what})"
            )
        k0, d0 = first.setdefault("size", (key, v.shape[-1]))
        if v.shape[-1] != d0:
            raise UserError(
                f"{path}: embeddings of different sizes, {k0}: {d0}, {key}: "
                f"{v.shape[-1]} ({what})"
            )
        if not np.isfinite(v).all():
            raise UserError(f"{path}: the embedding of {key} has NaN or Inf ({what})")
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = unit_embeddings(raw)
    for key, v in unit.items():
        if not np.isfinite(v).all():
            raise UserError(f"{path}: the embedding of {key} has zero length ({what})")
    norm = {key: float(np.linalg.norm(v, axis=-1).mean()) for key, v in raw.items()}
    return Embeddings(unit, norm)


def check_covered(
    emb: Dict, pairs: List[Tuple[str, str]], where, path: Path, what: str
) -> None:
    """UserError at the first trial with an utterance missing from ``emb``;
    ``where(i)`` names trial ``i``."""
    for i, pair in enumerate(pairs):
        missing = [u for u in pair if u not in emb]
        if missing:
            raise UserError(
                f"{where(i)}: no embedding of {missing[0]} in {path} ({what})"
            )


def read_durations(data_dir: Path, utts: Iterable[str]) -> Dict[str, float]:
    """Seconds of each of ``utts``: from ``utt2dur`` when ``data_dir`` has one (Kaldi's
    file), else from the audio that ``wav.scp`` or the trial lists (``trial.scp``,
    ``trial2.scp``: key uttA*uttB) name. UserError naming what is missing."""
    data_dir, wanted = Path(data_dir), set(utts)
    if (data_dir / "utt2dur").is_file():
        entries = read_entries(data_dir / "utt2dur")
        out = {}
        for utt in sorted(wanted):
            if utt not in entries:
                raise UserError(f"{data_dir / 'utt2dur'}: no duration of {utt}")
            n, value = entries[utt]
            try:
                out[utt] = float(value)
            except ValueError:
                out[utt] = math.nan
            if not out[utt] > 0:
                raise UserError(
                    f"{data_dir / 'utt2dur'}:{n}: {value!r} is not a positive number "
                    "of seconds"
                )
        return out
    audio: Dict[str, Tuple[str, str]] = {}  # utt -> (path, file:line)
    if (data_dir / "wav.scp").is_file():
        for utt, (n, path) in read_entries(data_dir / "wav.scp").items():
            audio[utt] = (path, f"{data_dir / 'wav.scp'}:{n}")
    for side, name in enumerate(("trial.scp", "trial2.scp")):
        if (data_dir / name).is_file():
            for key, (n, path) in read_entries(data_dir / name).items():
                utt = key.split("*")[side] if key.count("*") == 1 else key
                audio.setdefault(utt, (path, f"{data_dir / name}:{n}"))
    out = {}
    for utt in sorted(wanted):
        if utt not in audio:
            raise UserError(
                f"{data_dir}: no audio of {utt} in utt2dur, wav.scp, trial.scp or "
                "trial2.scp (durations are a quality measure of calibration)"
            )
        path, where = audio[utt]
        try:
            out[utt] = soundfile.info(path).duration
        except (OSError, RuntimeError) as err:
            raise UserError(
                f"{where}: cannot read the duration of {path}: {err}; give "
                f"{data_dir / 'utt2dur'} (<utt> <seconds>) instead"
            ) from None
        if not out[utt] > 0:
            raise UserError(f"{where}: {path} has no samples")
    return out
