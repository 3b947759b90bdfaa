"""Kaldi-style data directories for ESPnet's speaker task: checks, trial lists, shape
files. Input directories are only read; everything is written to new paths.

A training directory needs ``wav.scp``, ``utt2spk`` and ``spk2utt``; a trial directory
(validation or test) needs ``wav.scp``, ``trial.scp``, ``trial2.scp`` and
``trial_label``. Shape files (``<key> <num_samples>``) are what ESPnet's batch samplers
read; for trials the key is the trial key and the length is that of the first
utterance. Audio must be 16 kHz mono (what the models are built for); ``check`` says
how to convert other audio.

Subcommands (``python -m espnet_plugin_intertopk.recipe.kaldi_data ...``): ``check``,
``shape``, ``copy``, ``holdout`` (move some training speakers into a validation
directory with its own trial list), ``cohort`` (a trial-style list of training
utterances, for embedding extraction of a score-normalisation cohort), ``utterances``
(each utterance of a trial list once, for embedding extraction) and ``subset`` (the
first N speakers of a training directory, for nested scale experiments). Output
directories carry safe_io's ownership marker: a later run replaces only directories
with that marker, never one of the user's, and never writes into its inputs. Every list
is written atomically.
"""

import argparse
import itertools
import math
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import soundfile

from espnet_plugin_intertopk.safe_io import atomic, ownership
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly

TOOL = "kaldi_data"
REQUIRED = {
    "train": ("wav.scp", "utt2spk", "spk2utt"),
    "test": ("wav.scp", "trial.scp", "trial2.scp", "trial_label"),
}
SAMPLE_RATE = 16000
CONVERT = (
    "user audio must be 16 kHz mono: convert it, e.g. "
    "'sox in.wav -r 16000 -c 1 -b 16 out.wav' (or 'ffmpeg -i in -ar 16000 -ac 1 "
    "out.wav'), and point wav.scp at the converted files"
)
REBUILD_SPK2UTT = (
    "spk2utt must list exactly utt2spk's utterances, grouped by speaker: rebuild it "
    "from utt2spk (Kaldi: utils/utt2spk_to_spk2utt.pl utt2spk > spk2utt)"
)


class DataDirError(UserError, ValueError):
    """A data directory the recipe cannot use; the message names the file (and line)
    and what to do. Exit status 1 on the command line."""


def read_text(path: Path, newline: Optional[str] = None) -> str:
    """The UTF-8 text of ``path``; DataDirError naming it when it cannot be read or
    is not UTF-8 (the bare decoding error names no file)."""
    try:
        with open(path, encoding="utf-8", newline=newline) as f:
            return f.read()
    except OSError as err:
        raise DataDirError(f"{path}: cannot read it: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise DataDirError(f"{path}: not a UTF-8 text file ({err.reason})") from err


def read_entries(path: Path) -> Dict[str, Tuple[int, str]]:
    """``key -> (line number, value)`` of a Kaldi-style ``<key> <value>`` file.

    A key given twice is refused: ESPnet keeps one of them silently (or fails deep in
    training), so a duplicate is a mistake in the list.
    """
    # newline="": a Windows line end is seen (and refused), not translated.
    text = read_text(path, newline="")
    _check_layout(path, text)
    out: Dict[str, Tuple[int, str]] = {}
    for n, line in enumerate(text.split("\n")[:-1], 1):
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataDirError(f"{path}:{n}: expected '<key> <value>', got {line!r}")
        key, value = parts
        if key in out:
            raise DataDirError(
                f"{path}:{n}: {key} is listed twice (also on line {out[key][0]}); "
                "every key must appear once: remove or rename one of them"
            )
        out[key] = (n, value)
    return out


# The lists of a data directory that name audio files.
AUDIO_LISTS = ("wav.scp", "trial.scp", "trial2.scp")


def audio_inputs(data_dir: Path) -> Dict[str, Path]:
    """The directories of the audio files ``data_dir``'s lists name, as inputs that
    no output may overlap: ``"<dir> (audio of <list>)"`` (the list naming the first
    of them) -> dir. Commands ending in ``|`` name no file."""
    found: Dict[Path, str] = {}
    for name in AUDIO_LISTS:
        scp = data_dir / name
        if scp.is_file():
            for _, value in read_entries(scp).values():
                if not value.rstrip().endswith("|"):
                    found.setdefault(Path(value).parent, str(scp))
    return {
        f"{directory} (audio of {scp})": directory for directory, scp in found.items()
    }


def _check_layout(path: Path, text: str) -> None:
    """Refuse what ESPnet (and ``wc -l``) would misread: a carriage return, a missing
    final newline, a blank line, a tab, spaces at either end of a line."""
    if not text:
        return
    lines = text.split("\n")
    problems = (
        ("\r", "has a carriage return (Windows line ends): convert the file, e.g. "
         "with dos2unix"),
        ("\t", "has a tab: separate the fields with one space"),
    )  # fmt: skip
    for n, line in enumerate(lines[:-1], 1):
        for char, what in problems:
            if char in line:
                raise DataDirError(f"{path}:{n}: {what}")
        if not line.strip():
            raise DataDirError(f"{path}:{n}: blank line: remove it")
        if line != line.strip():
            raise DataDirError(
                f"{path}:{n}: spaces at the start or end of the line: remove them"
            )
    if lines[-1]:
        raise DataDirError(
            f"{path}:{len(lines)}: the last line has no final newline: add one"
        )


def read_map(path: Path) -> Dict[str, str]:
    """``<key> <value>`` lines of a Kaldi-style file (see ``read_entries``)."""
    return {key: value for key, (_, value) in read_entries(path).items()}


def write_lines(path: Path, lines: Iterable[str]) -> None:
    atomic.write_text(path, "".join(line + "\n" for line in lines))


def _audio_info(path: str, where: str):
    """soundfile's info of ``path``; ``where`` (file:line) names the list that gives
    it."""
    if not Path(path).is_file():
        raise DataDirError(f"{where}: audio file {path} does not exist")
    try:
        return soundfile.info(path)
    except Exception as err:  # noqa: BLE001 - any reader error: unusable
        raise DataDirError(f"{where}: cannot read {path}: {err}") from err


def _check_audio(lists: Iterable[Path]) -> None:
    """Every audio file the lists name (each file opened once): readable, 16 kHz,
    mono, not empty."""
    first: Dict[str, str] = {}
    for scp in lists:
        for n, path in read_entries(scp).values():
            first.setdefault(path, f"{scp}:{n}")
    for path, where in first.items():
        info = _audio_info(path, where)
        if info.samplerate != SAMPLE_RATE or info.channels != 1:
            raise DataDirError(
                f"{where}: {path} is {info.samplerate} Hz with {info.channels} "
                f"channel(s); {CONVERT}"
            )
        if info.frames == 0:
            raise DataDirError(
                f"{where}: {path} has no samples (zero-length audio): remove its line "
                "or replace the file"
            )


def _nonempty(path: Path, what: str) -> Dict[str, Tuple[int, str]]:
    entries = read_entries(path)
    if not entries:
        raise DataDirError(f"{path}: no {what} (the file is empty)")
    return entries


def _check_speakers(data_dir: Path, wavs: Dict[str, Tuple[int, str]]) -> None:
    """utt2spk and wav.scp list the same utterances, of 2 or more speakers; spk2utt
    groups exactly those utterances by the same speakers (ESPnet numbers the classes
    from spk2utt and looks every utt2spk label up in it)."""
    utt2spk_path, spk2utt_path = data_dir / "utt2spk", data_dir / "spk2utt"
    utt2spk = _nonempty(utt2spk_path, "utterances")
    for utt, (n, _) in utt2spk.items():
        if utt not in wavs:
            raise DataDirError(
                f"{utt2spk_path}:{n}: {utt} has no entry in wav.scp: add its audio to "
                "wav.scp or remove the line"
            )
    for utt, (n, _) in wavs.items():
        if utt not in utt2spk:
            raise DataDirError(
                f"{data_dir / 'wav.scp'}:{n}: {utt} has no speaker in utt2spk: add it "
                "to utt2spk or remove the line"
            )
    speakers = {spk for _, spk in utt2spk.values()}
    if len(speakers) < 2:
        raise DataDirError(
            f"{utt2spk_path}: {len(speakers)} speaker(s); speaker training needs at "
            "least 2"
        )
    listed: Dict[str, int] = {}
    for spk, (n, value) in read_entries(spk2utt_path).items():
        for utt in value.split():
            if utt in listed:
                raise DataDirError(
                    f"{spk2utt_path}:{n}: utterance {utt} is listed twice (also on "
                    f"line {listed[utt]}); {REBUILD_SPK2UTT}"
                )
            listed[utt] = n
            if utt not in utt2spk:
                raise DataDirError(
                    f"{spk2utt_path}:{n}: utterance {utt} of speaker {spk} is not in "
                    f"utt2spk; {REBUILD_SPK2UTT}"
                )
            line, given = utt2spk[utt]
            if given != spk:
                raise DataDirError(
                    f"{spk2utt_path}:{n}: utterance {utt} is under speaker {spk}, but "
                    f"utt2spk line {line} gives {given}; {REBUILD_SPK2UTT}"
                )
    for utt, (n, spk) in utt2spk.items():
        if utt not in listed:
            raise DataDirError(
                f"{utt2spk_path}:{n}: utterance {utt} (speaker {spk}) is missing from "
                f"spk2utt; {REBUILD_SPK2UTT}"
            )


def _check_trials(data_dir: Path, wavs: Dict[str, Tuple[int, str]]) -> None:
    """trial_label: ``<uttA>*<uttB> 0|1`` lines naming utterances of wav.scp (and of
    utt2spk, when there is one: scoring groups the trials by its speakers);
    trial.scp and trial2.scp: the same keys."""
    label_path = data_dir / "trial_label"
    labels = _nonempty(label_path, "trials")
    utt2spk = (
        read_entries(data_dir / "utt2spk") if (data_dir / "utt2spk").is_file() else None
    )
    for key, (n, value) in labels.items():
        if value not in ("0", "1"):
            raise DataDirError(
                f"{label_path}:{n}: {key} has label {value!r}; a label is 1 (same "
                "speaker) or 0"
            )
        parts = key.split("*")
        if len(parts) != 2 or not all(parts):
            raise DataDirError(
                f"{label_path}:{n}: trial key {key!r} is not '<uttA>*<uttB>' (two "
                "utterance ids joined by '*')"
            )
        for utt in parts:
            if utt not in wavs:
                raise DataDirError(
                    f"{label_path}:{n}: {utt} (of trial {key}) is not an utterance of "
                    "wav.scp: trial keys join two utterance ids of wav.scp"
                )
            if utt2spk is not None and utt not in utt2spk:
                raise DataDirError(
                    f"{label_path}:{n}: {utt} (of trial {key}) has no speaker in "
                    "utt2spk: add it there, or remove utt2spk (it is optional)"
                )
    for name in ("trial.scp", "trial2.scp"):
        entries = read_entries(data_dir / name)
        for key, (n, _) in entries.items():
            if key not in labels:
                raise DataDirError(
                    f"{data_dir / name}:{n}: trial {key} is not in trial_label: the "
                    "trial files must list the same keys"
                )
        for key, (n, _) in labels.items():
            if key not in entries:
                raise DataDirError(
                    f"{label_path}:{n}: trial {key} has no line in {name}: the trial "
                    "files must list the same keys"
                )


def check_data_dir(data_dir: Path, kind: str) -> None:
    """Raise DataDirError naming the first missing, inconsistent or unreadable file
    (with its line where there is one)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataDirError(f"{data_dir}: no such directory")
    for name in REQUIRED[kind]:
        if (data_dir / name).is_dir():
            raise DataDirError(f"{data_dir / name}: a directory, not a list")
        if not (data_dir / name).is_file():
            raise DataDirError(
                f"{data_dir / name}: required file is missing ({kind} data)"
            )
    wavs = _nonempty(data_dir / "wav.scp", "utterances")
    if kind == "train":
        _check_speakers(data_dir, wavs)
        _check_audio([data_dir / "wav.scp"])
    else:
        _check_trials(data_dir, wavs)
        _check_audio([data_dir / n for n in ("wav.scp", "trial.scp", "trial2.scp")])


def make_trials(
    utts: Dict[str, List[str]],
    max_target: int,
    nontarget_ratio: float,
    rng,
    group_of: Optional[Dict[str, str]] = None,
    within_group: float = 0.0,
) -> List[Tuple[str, str, int]]:
    """Trials ``(uttA, uttB, label)`` from utterances grouped by speaker, no pair twice.

    Args:
        utts: speaker -> utterances.
        max_target: at most this many target pairs (all of them if there are fewer).
        nontarget_ratio: non-target pairs per target pair (as many as exist, at most;
            inf: all of them).
        rng: a numpy Generator.
        group_of: speaker -> group (speakers made alike on purpose), for
            ``within_group``.
        within_group: the fraction of the non-target pairs drawn between speakers of
            one group (as many as exist, at most); the rest are drawn between groups
            (and within groups, when too few pairs are across groups).
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
    n_n = len(nontarget)
    if math.isfinite(nontarget_ratio):
        n_n = min(int(round(n_t * nontarget_ratio)), n_n)
    pick_t = rng.choice(len(target), n_t, replace=False)
    if group_of and within_group > 0:
        same = [group_of[spk_of[a]] == group_of[spk_of[b]] for a, b in nontarget]
        within = np.flatnonzero(same)
        across = np.flatnonzero(np.logical_not(same))
        n_w = min(int(round(n_n * within_group)), len(within))
        n_a = min(n_n - n_w, len(across))
        n_w = n_n - n_a  # too few pairs across groups: the rest within (n_n fit)
        pick_n = np.concatenate(
            [
                within[rng.choice(len(within), n_w, replace=False)],
                across[rng.choice(len(across), n_a, replace=False)],
            ]
        )
    else:
        pick_n = rng.choice(len(nontarget), n_n, replace=False)
    pairs = [(*target[i], 1) for i in sorted(pick_t)]
    pairs += [(*nontarget[i], 0) for i in sorted(pick_n)]
    order = rng.permutation(len(pairs))
    return [pairs[i] for i in order]


def validation_trials(
    utts: Dict[str, List[str]], n_trials: int, rng
) -> List[Tuple[str, str, int]]:
    """A validation list: every pair of the utterances when ``n_trials`` is 0 (the
    plugin's validation embeds each utterance once, so trials cost only a distance),
    else a balanced list of about ``n_trials``."""
    if n_trials == 0:
        return make_trials(utts, sys.maxsize, math.inf, rng)
    return make_trials(utts, n_trials // 2, 1.0, rng)


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


def _fresh_outputs(outputs: Dict[str, Path], inputs: List[Path]) -> None:
    """Make each output a fresh directory of this tool's, or refuse before anything
    is changed: an output that overlaps an input or another output, or a directory
    this tool did not provably make (``outputs``: option name -> directory). The last
    run's outputs are renamed aside, not removed."""
    for what, directory in outputs.items():
        ownership.check_apart(directory, inputs, what)
    ownership.check_outputs_apart(outputs)
    for what, directory in outputs.items():
        ownership.check_replaceable(directory, TOOL, what)
    for what, directory in outputs.items():
        ownership.replace_dir(directory, TOOL, what)


def holdout(
    train_dir: Path,
    out_train: Path,
    out_valid: Path,
    n_speakers: int,
    n_trials: int,
    seed: int,
) -> None:
    """Split ``train_dir`` by speaker: ``n_speakers`` drawn at random go to
    ``out_valid`` with its trial list (``validation_trials``); the rest to
    ``out_train``."""
    train_dir = Path(train_dir)
    speakers = _speakers(train_dir)
    if n_speakers < 2 or len(speakers) - n_speakers < 2:
        raise DataDirError(
            f"{train_dir}: {len(speakers)} speakers cannot give {n_speakers} "
            "validation speakers and keep 2 or more for training (need >= 2 on each "
            "side)"
        )
    wavs = read_map(train_dir / "wav.scp")
    _fresh_outputs({"out_train": out_train, "out_valid": out_valid}, [train_dir])
    rng = np.random.default_rng(seed)
    held = set(rng.choice(sorted(speakers), n_speakers, replace=False).tolist())
    write_speaker_dir(
        Path(out_train), {s: u for s, u in speakers.items() if s not in held}, wavs
    )
    valid = {s: u for s, u in speakers.items() if s in held}
    write_speaker_dir(Path(out_valid), valid, wavs)
    write_trials(Path(out_valid), validation_trials(valid, n_trials, rng), wavs)


def _first(
    speakers: Dict[str, List[str]], n_speakers: int, per_speaker: int
) -> Dict[str, List[str]]:
    """The first ``n_speakers`` speakers in sorted order (0: all), each with its first
    ``per_speaker`` utterances (0: all): smaller selections are nested in larger
    ones."""
    names = sorted(speakers)[: n_speakers or None]
    return {s: sorted(speakers[s])[: per_speaker or None] for s in names}


def subset(train_dir: Path, out: Path, n_speakers: int, per_speaker: int = 0) -> None:
    """A training directory of ``train_dir``'s first ``n_speakers`` speakers (sorted
    names) with their first ``per_speaker`` utterances (0: all), so that a scale
    series (e.g. 100, 300, 1000 speakers) trains on nested sets."""
    train_dir = Path(train_dir)
    speakers = _speakers(train_dir)
    if n_speakers > len(speakers):
        raise DataDirError(
            f"{train_dir}: {len(speakers)} speakers, fewer than --n_speakers "
            f"{n_speakers}"
        )
    wavs = read_map(train_dir / "wav.scp")
    _fresh_outputs({"out": out}, [train_dir])
    write_speaker_dir(Path(out), _first(speakers, n_speakers, per_speaker), wavs)


def cohort_list(
    train_dir: Path, out: Path, per_speaker: int, n_speakers: int = 0
) -> None:
    """A trial-style directory listing up to ``per_speaker`` utterances of every
    training speaker, or of the first ``n_speakers`` (sorted names; 0: all), with
    their utt2spk (key ``u*u``: ESPnet's extraction embeds each utterance once)."""
    train_dir, out = Path(train_dir), Path(out)
    speakers = _speakers(train_dir)
    wavs = read_map(train_dir / "wav.scp")
    chosen = _first(speakers, n_speakers, per_speaker)
    _fresh_outputs({"out": out}, [train_dir])
    write_trials(out, [(u, u, 1) for us in chosen.values() for u in us], wavs)
    write_lines(out / "utt2spk", [f"{u} {s}" for s, us in chosen.items() for u in us])


def utterance_list(trial_dir: Path, out: Path) -> None:
    """Every utterance of ``trial_dir``'s trials once, as a trial-style list (key
    ``u*u``) for ESPnet's embedding extraction, which reads both sides of every trial
    it is given: on a list of each utterance once it reads each file once."""
    trial_dir, out = Path(trial_dir), Path(out)
    sides = [read_entries(trial_dir / n) for n in ("trial.scp", "trial2.scp")]
    if sides[0].keys() != sides[1].keys():
        odd = sorted(sides[0].keys() ^ sides[1].keys())[0]
        raise DataDirError(
            f"{trial_dir}: trial.scp and trial2.scp list other trials ({odd} is in "
            "one only): both list every trial key"
        )
    wavs: Dict[str, str] = {}
    for side, entries in enumerate(sides):
        for key, (n, path) in entries.items():
            utts = key.split("*")
            if len(utts) != 2 or not all(utts):
                raise DataDirError(
                    f"{trial_dir}/{('trial.scp', 'trial2.scp')[side]}:{n}: trial key "
                    f"{key!r} is not <uttA>*<uttB>"
                )
            wavs.setdefault(utts[side], path)
    _fresh_outputs({"out": out}, [trial_dir])
    write_trials(out, [(u, u, 1) for u in sorted(wavs)], wavs)


def write_shape_file(scp: Path, out: Path) -> None:
    """``<key> <num_samples>`` for every entry of a wav.scp-like file (written
    outside the list's directory: a tool never writes into its input)."""
    scp = Path(scp)
    ownership.check_apart(out, [scp.parent], "the shape file")
    entries = read_entries(scp)
    lengths: Dict[str, int] = {}
    for n, path in entries.values():
        if path not in lengths:
            lengths[path] = _audio_info(path, f"{scp}:{n}").frames
    write_lines(out, [f"{k} {lengths[p]}" for k, (_, p) in entries.items()])


def copy_dir(src: Path, dst: Path) -> None:
    """The plain files of ``src`` (not its ownership marker) into a fresh ``dst``;
    ``src`` is only read."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataDirError(f"{src}: no such directory")
    _fresh_outputs({"dst": dst}, [src])
    for f in sorted(src.iterdir()):
        if f.is_file() and f.name != ownership.MARKER:
            atomic.copy_file(f, dst / f.name)


def _zero_or_at_least(minimum: int):
    """An argparse type: 0 or an integer >= ``minimum``."""
    at_least = _at_least(minimum)

    def parse(text: str) -> int:
        return 0 if text.strip() == "0" else at_least(text)

    parse.__name__ = f"0 or integer >= {minimum}"
    return parse


def _at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise ValueError(text)
        return value

    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in its error
    return parse


@exits_cleanly(TOOL)
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog=TOOL, description="Kaldi-style data directory tools"
    )
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
    hold.add_argument("--n_speakers", type=_at_least(2), required=True)
    hold.add_argument(
        "--n_trials",
        type=_zero_or_at_least(2),
        default=0,
        help="validation trials: 0 (default) every pair of the held-out utterances, "
        "else a balanced list of about this many",
    )
    hold.add_argument("--seed", type=_at_least(0), default=0)
    cohort = sub.add_parser("cohort", help="trial-style list of training utterances")
    cohort.add_argument("train_dir", type=Path)
    cohort.add_argument("out", type=Path)
    cohort.add_argument("--per_speaker", type=_at_least(1), default=3)
    cohort.add_argument(
        "--n_speakers",
        type=_zero_or_at_least(2),
        default=0,
        help="only the first this many speakers (sorted names); 0 (default): all",
    )
    utts = sub.add_parser(
        "utterances", help="each utterance of a trial list once (for extraction)"
    )
    utts.add_argument("trial_dir", type=Path)
    utts.add_argument("out", type=Path)
    sub_set = sub.add_parser(
        "subset", help="the first N speakers of a training directory (nested sets)"
    )
    sub_set.add_argument("train_dir", type=Path)
    sub_set.add_argument("out", type=Path)
    sub_set.add_argument("--n_speakers", type=_at_least(2), required=True)
    sub_set.add_argument(
        "--per_speaker",
        type=_zero_or_at_least(1),
        default=0,
        help="the first this many utterances of each speaker; 0 (default): all",
    )
    speakers = sub.add_parser(
        "speakers", help="print the number of speakers of a directory's spk2utt"
    )
    speakers.add_argument("data_dir", type=Path)
    args = parser.parse_args(argv)
    if args.command == "speakers":
        print(len(_nonempty(args.data_dir / "spk2utt", "speakers")))
    elif args.command == "check":
        check_data_dir(args.data_dir, args.kind)
    elif args.command == "shape":
        write_shape_file(args.scp, args.out)
    elif args.command == "copy":
        copy_dir(args.src, args.dst)
        if args.kind == "train":
            atomic.copy_file(args.dst / "spk2utt", args.dst / "category2utt")
    elif args.command == "holdout":
        holdout(
            args.train_dir,
            args.out_train,
            args.out_valid,
            args.n_speakers,
            args.n_trials,
            args.seed,
        )
    elif args.command == "utterances":
        utterance_list(args.trial_dir, args.out)
    elif args.command == "subset":
        subset(args.train_dir, args.out, args.n_speakers, args.per_speaker)
    else:
        cohort_list(args.train_dir, args.out, args.per_speaker, args.n_speakers)


if __name__ == "__main__":
    main()
