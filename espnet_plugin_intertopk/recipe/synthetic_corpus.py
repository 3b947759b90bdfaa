"""A deterministic synthetic multi-speaker corpus, in Kaldi-style directories.

No speech corpus can be downloaded on the machines this project is built on, so the
recipe makes one. Each speaker is a source-filter voice with its own characteristics:

* fundamental frequency (mean) and its range (intonation depth), jitter;
* vocal-tract length, which scales every formant;
* glottal spectral tilt and breathiness (aspiration noise in the source);
* speaking rate (phone durations) and a personal vowel-space shift.

Every utterance varies within the speaker: a random phone sequence (vowels and
fricative/stop-like noise bursts), a random intonation contour, a random channel
colouring (peaking filters) and additive noise at a random SNR. A speaker can therefore
not be told apart by a single cue; it takes an embedding model.

Output: ``train/``, ``valid/`` and ``test/`` with disjoint speakers, each with
``wav.scp``, ``utt2spk``, ``spk2utt``, ``category2utt`` (same as spk2utt, for ESPnet's
category iterator) and ``utt2num_samples``; ``valid/`` and ``test/`` also with
``trial.scp``, ``trial2.scp``, ``trial_label``. Audio is 16 kHz 16-bit PCM under
``<out>/wav``. The same settings give byte-identical files; ``.done`` records the
settings, and the command line refuses to reuse a directory made with other ones.

The command line checks every setting before it touches the disk and replaces a
directory only when safe_io's ownership marker (written first) proves it made it; the
old one is renamed aside, never removed (``.done``, written last, proves nothing about
ownership: it only tells a finished corpus from an interrupted one, which is redone).
Any other non-empty directory is refused.
"""

import argparse
import inspect
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from scipy import signal
from scipy.io import wavfile
from tqdm import tqdm

from espnet_plugin_intertopk.recipe.kaldi_data import (
    make_trials,
    validation_trials,
    write_lines,
    write_speaker_dir,
    write_trials,
)
from espnet_plugin_intertopk.safe_io import atomic, ownership
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly

SAMPLE_RATE = 16000
TOOL = "synthetic_corpus"
# The least each setting may be for usable lists: training needs 2 classes; trials
# need 2 speakers (non-target pairs) with 2 utterances each (target pairs), and the
# validation list one trial of each kind; a phone lasts about 0.1 s.
MINIMUM = {
    "n_train_speakers": 2,
    "n_valid_speakers": 2,
    "n_test_speakers": 2,
    "utts_per_speaker": 1,
    "valid_utts_per_speaker": 2,
    "test_utts_per_speaker": 2,
    "min_duration": 0.1,
    "seed": 0,
    "group_size": 1,
}
# Settings added after corpora were made: left out of ``.done`` at these values (no
# effect), so that those corpora are still recognised.
LATER_OPTIONS = {"label_noise": 0.0, "group_size": 1, "within_group_nontargets": 0.0}

# Average adult formants (Hz) of a few vowels: F1, F2, F3, F4.
VOWELS = np.array(
    [
        [730, 1090, 2440, 3400],  # a
        [270, 2290, 3010, 3700],  # i
        [300, 870, 2240, 3300],  # u
        [530, 1840, 2480, 3500],  # e
        [570, 840, 2410, 3300],  # o
        [660, 1720, 2410, 3400],  # ae
        [440, 1020, 2240, 3300],  # schwa-ish
        [390, 1990, 2550, 3600],  # I
    ],
    dtype=float,
)
BANDWIDTHS = np.array([80.0, 110.0, 160.0, 250.0])


@dataclass(frozen=True)
class Voice:
    """What makes one synthetic speaker."""

    f0: float  # mean fundamental frequency, Hz
    f0_range: float  # intonation depth, semitones
    jitter: float  # relative cycle-to-cycle f0 noise
    tract: float  # formant scale (shorter tract -> higher formants)
    tilt: float  # one-pole coefficient of the glottal low-pass
    breath: float  # aspiration noise level relative to voicing
    rate: float  # phones per second
    vowel_shift: Tuple[float, ...]  # personal per-vowel F1/F2 offsets (relative)


def make_voice(rng: np.random.Generator) -> Voice:
    female = rng.random() < 0.5
    f0 = rng.uniform(165, 260) if female else rng.uniform(85, 150)
    tract = rng.uniform(1.05, 1.22) if female else rng.uniform(0.88, 1.05)
    return Voice(
        f0=float(f0),
        f0_range=float(rng.uniform(1.0, 5.0)),
        jitter=float(rng.uniform(0.002, 0.02)),
        tract=float(tract),
        tilt=float(rng.uniform(0.6, 0.97)),
        breath=float(rng.uniform(0.02, 0.35)),
        rate=float(rng.uniform(6.0, 11.0)),
        vowel_shift=tuple(
            float(v) for v in rng.normal(0.0, 0.06, size=2 * len(VOWELS))
        ),
    )


def group_member(voice: Voice, rng: np.random.Generator) -> Voice:
    """Another speaker of ``voice``'s group: the same voice but for its pitch and, a
    little, its vocal-tract length (a hard negative for ``voice``)."""
    return replace(
        voice,
        f0=float(voice.f0 * rng.uniform(0.85, 1.18)),
        tract=float(voice.tract * rng.uniform(0.97, 1.03)),
    )


def _formant_sos(freqs: np.ndarray, bws: np.ndarray) -> np.ndarray:
    """Cascade of two-pole resonators as second-order sections, each with unit gain at
    its own peak (so that a cascade of high resonances cannot blow up)."""
    sos = []
    for f, bw in zip(freqs, bws):
        w = 2 * np.pi * min(f, 0.45 * SAMPLE_RATE) / SAMPLE_RATE
        r = np.exp(-np.pi * bw / SAMPLE_RATE)
        a1, a2 = -2 * r * np.cos(w), r * r
        sos.append(
            [
                (1 - r) * np.sqrt(1 - 2 * r * np.cos(2 * w) + r * r),
                0.0,
                0.0,
                1.0,
                a1,
                a2,
            ]
        )
    return np.array(sos)


def _glottal_source(f0_track: np.ndarray, voice: Voice, rng) -> np.ndarray:
    f0 = f0_track * (1 + voice.jitter * rng.standard_normal(len(f0_track)))
    phase = np.cumsum(f0 / SAMPLE_RATE)
    pulses = np.diff(np.floor(phase), prepend=0.0)  # one impulse per period
    source = signal.lfilter([1.0 - voice.tilt], [1.0, -voice.tilt], pulses * 40.0)
    return (
        source
        + voice.breath * rng.standard_normal(len(source)) * np.abs(source).mean() * 6
    )


def synthesize(voice: Voice, duration: float, rng: np.random.Generator) -> np.ndarray:
    """One utterance of ``voice``, about ``duration`` seconds, float in [-1, 1]."""
    n = int(duration * SAMPLE_RATE)
    # Intonation: a declining line plus a few random accents, in semitones.
    t = np.linspace(0, 1, n)
    accents = sum(
        rng.uniform(-1, 1) * np.exp(-((t - rng.random()) ** 2) / 0.01) for _ in range(3)
    )
    semitones = voice.f0_range * (0.5 * accents - 0.4 * t + rng.uniform(-0.3, 0.3))
    f0_track = voice.f0 * 2.0 ** (semitones / 12.0)
    voiced = _glottal_source(f0_track, voice, rng)
    noise = rng.standard_normal(n) * np.abs(voiced).mean() * 3

    out = np.zeros(n)
    zi = np.zeros((4, 2))
    pos = 0
    while pos < n:
        length = int(SAMPLE_RATE * rng.uniform(0.6, 1.4) / voice.rate)
        seg = slice(pos, min(n, pos + length))
        is_vowel = rng.random() < 0.8
        if is_vowel:
            v = rng.integers(len(VOWELS))
            formants = VOWELS[v] * voice.tract
            formants[:2] *= 1 + np.array(voice.vowel_shift[2 * v : 2 * v + 2])
            excitation = voiced[seg]
        else:  # fricative-like: noise through a high resonance
            formants = (
                np.array([2500.0, 3500, 4500, 5500])
                * voice.tract
                * rng.uniform(0.8, 1.2, 4)
            )
            excitation = noise[seg] * 0.5
        sos = _formant_sos(formants * rng.uniform(0.97, 1.03, 4), BANDWIDTHS)
        y, zi = signal.sosfilt(sos, excitation, zi=zi)
        # Phone loudness: vowels carry the energy, fricatives are ~12 dB weaker; a
        # 10 ms fade in and out avoids clicks between phones.
        level = (1.0 if is_vowel else 0.25) * rng.uniform(0.7, 1.3)
        fade = np.minimum(
            1.0, np.minimum(np.arange(len(y)), np.arange(len(y))[::-1]) / 160.0
        )
        out[seg] = y * level / (np.sqrt(np.mean(y**2)) + 1e-9) * fade
        pos += length

    # Channel: two random peaking/notch colourings, then additive noise at random SNR.
    for _ in range(2):
        # Q >= 1 keeps the bandwidth (f / Q) below Nyquist: wider peaks are unstable.
        b, a = signal.iirpeak(
            rng.uniform(200, 6000), rng.uniform(1.0, 3.0), fs=SAMPLE_RATE
        )
        out = out + rng.uniform(-0.35, 0.35) * signal.lfilter(b, a, out)
    snr_db = rng.uniform(10, 35)
    power = np.mean(out**2) + 1e-12
    out = out + rng.standard_normal(n) * np.sqrt(power / 10 ** (snr_db / 10))
    return out / (np.abs(out).max() + 1e-9) * rng.uniform(0.3, 0.9)


def generate(
    out: Path,
    n_train_speakers: int = 100,
    n_valid_speakers: int = 20,
    n_test_speakers: int = 20,
    utts_per_speaker: int = 8,
    valid_utts_per_speaker: int = 10,
    test_utts_per_speaker: int = 10,
    n_valid_trials: int = 0,
    test_nontarget_ratio: float = 2.0,
    min_duration: float = 1.5,
    max_duration: float = 3.0,
    seed: int = 0,
    label_noise: float = 0.0,
    group_size: int = 1,
    within_group_nontargets: float = 0.0,
) -> None:
    """Write the corpus under ``out`` (``train/``, ``valid/``, ``test/``, ``wav/``).

    Three disjoint speaker sets. ``valid`` (checkpoint selection, tuning) gets every
    pair of its utterances as trials (``n_valid_trials`` 0), or a balanced list of
    about ``n_valid_trials``; ``test`` gets every target pair and
    ``test_nontarget_ratio`` times as many non-target pairs.

    ``label_noise``: that fraction of the training utterances is labelled as another
    training speaker (drawn at random); the truth goes to ``noise_truth``
    (``<utt> <true speaker> <given speaker>``) next to ``train/``, which training never
    reads. Audio, validation and test sets are those of the same seed without noise.

    ``group_size`` > 1: the speakers of each set come in groups of that many (the last
    may be smaller) that share one voice but for pitch and tract length
    (``group_member``): hard negatives by design; ``spk2group`` in each set says
    which. ``within_group_nontargets``: that fraction of the test's non-target trials
    is drawn within groups (the validation list is drawn as without groups).
    """
    check_settings({k: v for k, v in locals().items() if k != "out"})
    out = Path(out)
    wav_dir = (out / "wav").resolve()
    wav_dir.mkdir(parents=True, exist_ok=True)
    master = np.random.default_rng(seed)
    sizes = {
        "train": (n_train_speakers, utts_per_speaker),
        "valid": (n_valid_speakers, valid_utts_per_speaker),
        "test": (n_test_speakers, test_utts_per_speaker),
    }
    n_spk = sum(n for n, _ in sizes.values())
    if group_size == 1:
        voices = [make_voice(master) for _ in range(n_spk)]
    else:
        voices = []
        for n, _ in sizes.values():  # groups do not straddle two sets
            for first in range(0, n, group_size):
                base = make_voice(master)
                voices.append(base)
                count = min(group_size, n - first)
                voices += [group_member(base, master) for _ in range(count - 1)]
    utt_seeds = master.integers(
        0, 2**63 - 1, size=(n_spk, max(c for _, c in sizes.values()))
    )
    splits: Dict[str, Dict[str, List[str]]] = {name: {} for name in sizes}
    group_of: Dict[str, str] = {}
    jobs = []
    i = 0
    for split, (n, count) in sizes.items():
        for k in range(n):
            spk = f"{split}spk{i:04d}"
            group_of[spk] = f"{split}group{k // group_size:04d}"
            splits[split][spk] = [f"{spk}-utt{j:03d}" for j in range(count)]
            jobs += [
                (u, voices[i], utt_seeds[i, j])
                for j, u in enumerate(splits[split][spk])
            ]
            i += 1

    num_samples = {}
    for utt, voice, useed in tqdm(jobs, desc="synthesising utterances", unit="utt"):
        rng = np.random.default_rng(useed)
        audio = synthesize(voice, rng.uniform(min_duration, max_duration), rng)
        pcm = np.round(audio * 32767).astype(np.int16)
        wavfile.write(wav_dir / f"{utt}.wav", SAMPLE_RATE, pcm)
        num_samples[utt] = len(pcm)

    wavs = {u: str(wav_dir / f"{u}.wav") for u in num_samples}
    if label_noise > 0:
        splits["train"] = _relabel(out, splits["train"], label_noise, seed)
    for split, utts in splits.items():
        write_speaker_dir(out / split, utts, wavs)
        names = sorted(u for us in utts.values() for u in us)
        write_lines(
            out / split / "utt2num_samples", [f"{u} {num_samples[u]}" for u in names]
        )
        if group_size > 1:
            write_lines(
                out / split / "spk2group",
                [f"{s} {group_of[s]}" for s in sorted(splits[split])],
            )
    write_trials(
        out / "valid",
        validation_trials(splits["valid"], n_valid_trials, master),
        wavs,
    )
    all_targets = (
        n_test_speakers * test_utts_per_speaker * (test_utts_per_speaker - 1) // 2
    )
    test_trials = make_trials(
        splits["test"],
        all_targets,
        test_nontarget_ratio,
        master,
        group_of=group_of,
        within_group=within_group_nontargets,
    )
    write_trials(out / "test", test_trials, wavs)


def _relabel(
    out: Path, speakers: Dict[str, List[str]], fraction: float, seed: int
) -> Dict[str, List[str]]:
    """Give ``fraction`` of the utterances another speaker's label; write the truth.
    Its own random stream, so that the audio and trials do not depend on it."""
    rng = np.random.default_rng([seed, 0x6E6F69])
    names = sorted(speakers)
    true_spk = {u: s for s, us in speakers.items() for u in us}
    utts = sorted(true_spk)
    chosen = rng.choice(len(utts), size=round(fraction * len(utts)), replace=False)
    given = dict(true_spk)
    for i in sorted(chosen):
        others = [s for s in names if s != true_spk[utts[i]]]
        given[utts[i]] = others[rng.integers(len(others))]
    write_lines(
        out / "noise_truth",
        [f"{u} {true_spk[u]} {given[u]}" for u in utts if given[u] != true_spk[u]],
    )
    relabelled: Dict[str, List[str]] = {}
    for u in utts:
        relabelled.setdefault(given[u], []).append(u)
    return relabelled


def check_settings(settings: Dict[str, object]) -> None:
    """Raise UserError (status 2) naming the first setting that cannot give a usable
    corpus."""
    for name, value in settings.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{name} {value}: must be a finite number", status=2)
        if name in MINIMUM and not value >= MINIMUM[name]:
            raise UserError(
                f"--{name} {value}: must be at least {MINIMUM[name]}", status=2
            )
    n_trials = settings["n_valid_trials"]
    if not (n_trials == 0 or n_trials >= 2):
        raise UserError(
            f"--n_valid_trials {n_trials}: must be 0 (every pair of the validation "
            "utterances) or at least 2",
            status=2,
        )
    if not settings["max_duration"] >= settings["min_duration"]:
        raise UserError(
            f"--max_duration {settings['max_duration']}: must be at least "
            f"--min_duration {settings['min_duration']}",
            status=2,
        )
    if not 0.0 < settings["test_nontarget_ratio"]:
        raise UserError(
            f"--test_nontarget_ratio {settings['test_nontarget_ratio']}: must be "
            "above 0",
            status=2,
        )
    if not 0.0 <= settings["within_group_nontargets"] <= 1.0:
        raise UserError(
            f"--within_group_nontargets {settings['within_group_nontargets']}: must "
            "be in [0, 1] (a fraction of the test's non-target trials)",
            status=2,
        )
    if settings["within_group_nontargets"] > 0 and settings["group_size"] < 2:
        raise UserError(
            "--within_group_nontargets needs --group_size 2 or more (speakers in "
            "groups)",
            status=2,
        )
    if not 0.0 <= settings["label_noise"] < 1.0:
        raise UserError(
            f"--label_noise {settings['label_noise']}: must be in [0, 1) (a fraction "
            "of the training utterances)",
            status=2,
        )


def settings_of(args: argparse.Namespace) -> Dict[str, object]:
    out = {k: v for k, v in sorted(vars(args).items()) if k not in ("out", "force")}
    for name, value in LATER_OPTIONS.items():
        if out.get(name) == value:
            del out[name]  # corpora made before the option keep their marker
    return out


def _settings_in(marker: Path) -> Dict[str, object]:
    try:
        have = json.loads(marker.read_text())
    except ValueError:
        have = None
    if not isinstance(have, dict):
        raise UserError(
            f"{marker} is damaged: give another directory, or --force to regenerate "
            "the corpus in place",
            status=2,
        )
    return have


@exits_cleanly(TOOL)
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog=TOOL, description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="output directory")
    defaults = inspect.signature(generate).parameters
    for name, param in defaults.items():
        if name != "out":
            parser.add_argument(
                f"--{name}", type=type(param.default), default=param.default
            )
    parser.add_argument("--force", action="store_true", help="regenerate even if done")
    args = parser.parse_args(argv)
    try:
        check_settings(
            {k: v for k, v in vars(args).items() if k not in ("out", "force")}
        )
    except UserError as err:
        parser.error(str(err))
    marker = args.out / ".done"
    wanted = settings_of(args)
    # Skipping only reads; replacing needs ownership.made_by's proof (a .done proves
    # nothing: Kaldi and ESPnet directories have them too).
    if marker.is_file() and not args.force:
        have = _settings_in(marker)
        if have == wanted:
            print(f"{args.out}: corpus already generated with these settings, skipping")
            return
        diff = {k: (have.get(k), v) for k, v in wanted.items() if have.get(k) != v}
        if ownership.made_by(args.out) != TOOL:
            ownership.check_replaceable(args.out, TOOL, "the corpus directory")
        raise UserError(
            f"{args.out} holds a corpus generated with other settings "
            f"(setting: (there, asked)) {diff}; give another directory, or --force "
            "to regenerate it (the old one is kept aside)",
            status=2,
        )
    # An interrupted generation (no .done) or --force: the old one goes aside whole.
    ownership.replace_dir(args.out, TOOL, "the corpus directory")
    generate(args.out, **wanted)
    atomic.write_text(marker, json.dumps(wanted, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
