"""The checked inputs of scoring and calibration: trial lists, embedding files and
utterance durations. Each problem is a UserError naming the file (and line)."""

import math
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Tuple

import numpy as np
import soundfile

from espnet_plugin_intertopk.recipe.kaldi_data import (
    audio_inputs,
    read_entries,
    read_text,
)
from espnet_plugin_intertopk.safe_io.errors import UserError, space_separated_names
from espnet_plugin_intertopk.scoring.normalisation import MIN_TOP_N, unit_embeddings


def names_among(text: str, option: str, allowed: Iterable[str], of: str) -> List[str]:
    """The space-separated names of ``option``, each one of ``allowed`` (``of`` names
    them in the message; UserError, status 2)."""
    names = space_separated_names(text, option)
    for name in names:
        if name not in allowed:
            raise UserError(f"{option} {text!r}: {name} is not one of {of}", status=2)
    return names


def check_top_n(top_n: int) -> None:
    """UserError (status 2) for a ``--top_n`` below AS-norm's MIN_TOP_N."""
    if top_n < MIN_TOP_N:
        raise UserError(
            f"--top_n must be >= {MIN_TOP_N} (one score has no spread), got {top_n}",
            status=2,
        )


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
        for n, line in enumerate(read_text(Path(path)).splitlines(), 1):
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
    if not raw:
        raise UserError(f"{path}: no embeddings in it ({what})")
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


def embedding_size(emb: Embeddings) -> int:
    """The size of an (already checked, non-empty) embedding file's vectors."""
    return next(iter(emb.unit.values())).size


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


def duration_inputs(data_dir: Path) -> Dict[str, Path]:
    """What ``read_durations`` reads of ``data_dir``, as inputs no output may
    overlap: the directory, and without utt2dur the directories of its audio."""
    data_dir = Path(data_dir)
    if (data_dir / "utt2dur").is_file():
        return {str(data_dir): data_dir}
    return {str(data_dir): data_dir, **audio_inputs(data_dir)}


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
            # isfinite: "inf" or 1e400 parse, and would give an infinite feature.
            if not (math.isfinite(out[utt]) and out[utt] > 0):
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
