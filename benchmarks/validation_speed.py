"""Seconds, audio reads and peak memory of one validation: ESPnet's method vs the
plugin's (each unique validation utterance loaded and embedded once).

    python benchmarks/validation_speed.py                # the full table (minutes)
    python benchmarks/validation_speed.py --quick        # small lists, a smoke run
    python benchmarks/validation_speed.py --workdir DIR  # keep the generated data

Methods, on the same model (the task's model built with seed 0) and the same crops:

* ``espnet``: ESPnet's ``SpkTrainer.validate_one_epoch``, as the plugin's trainer runs
  it with ``--valid_unique_utterances false``;
* ``plugin``: the plugin's trainer with ``--valid_unique_utterances true``;
* ``embed once``: the plugin's iterator and ``validation.embed_utterances`` alone, no
  scoring: every unique utterance loaded, cropped and embedded once, the least any
  validation of that list costs.

Data sets, generated into a temporary directory (or ``--workdir``):

* (a) the recipe's validation set: ``synthetic_corpus.generate`` with the recipe's
  validation defaults (20 speakers x 10 utterances, every pair: 19,900 trials) and
  its model config ``conf/train.yaml`` unchanged;
* (b) a VoxCeleb1-O-shaped list (40 speakers, 4,708 utterances, 37,611 trials, about
  half of them target trials) of short filtered noise, with the same model and the
  valid crop shortened to fit the audio; and the same utterances under a quarter of
  the trials, to show the plugin's memory does not grow with the trial count.

Processes run one after another, one thread each, with DataLoader workers off (so
every audio read happens in the measured process and is counted). Audio reads are the
reads of the ``speech``/``speech2`` loaders of ESPnet's dataset. Time comes from one
process per data set in which the methods take turns, round after round (``--rounds``,
median), so that the load of a shared machine slows them alike; ESPnet's method, the
long one, runs once, in the middle round. Peak memory comes from a fresh process per
row with one validation: the rise of its resident set, the peak (VmHWM) reset just
before validation starts (``/proc/self/clear_refs``) and the resident set at that
moment subtracted, so imports and the model do not count. That process runs with
glibc's mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``), so that a batch's buffers
go back to the system when freed and the resident set follows the data held: with the
default, dynamic threshold freed buffers stay resident at the allocator's discretion
(the same plugin validation peaked anywhere from 50 to 540 MiB), which would hide what
each method keeps. The fixed threshold slows allocation, hence the separate timing
processes.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from tqdm import tqdm

from espnet_plugin_intertopk.safe_io import atomic, ownership
from espnet_plugin_intertopk.safe_io.errors import exits_cleanly

TOOL = "validation_speed"
ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "conf" / "train.yaml"
SAMPLE_RATE = 16000
# The loss head is part of the model but not of validation; its size does not matter.
SPK_NUM = 100
# (b): VoxCeleb1-O's shape and what was shrunk to fit this machine.
VOX = dict(speakers=40, utterances=4708, trials=37611, targets=18802)
VOX_QUICK = dict(speakers=8, utterances=160, trials=800, targets=400)
VOX_DURATION = (0.6, 1.0)  # seconds; VoxCeleb1-O's utterances average about 8 s
VOX_CROP = 0.5  # seconds per valid crop (conf/train.yaml: 1.5)
VOX_NAME = "(b) VoxCeleb1-O-shaped"
# Bytes from which glibc serves an allocation by mmap (its initial default), fixed.
MMAP_THRESHOLD = 128 * 1024


# --------------------------------------------------------------------------- data


def recipe_set(out: Path, quick: bool) -> Path:
    """(a): the recipe's validation speakers and trials; train/test minimal (unused)."""
    from espnet_plugin_intertopk.recipe import synthetic_corpus

    small = dict(n_valid_speakers=4, valid_utts_per_speaker=4) if quick else {}
    synthetic_corpus.generate(
        out,
        n_train_speakers=2,
        utts_per_speaker=2,
        n_test_speakers=2,
        test_utts_per_speaker=2,
        **small,
    )
    return out / "valid"


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    """Low-passed white noise (one pole): cheap audio, the content is irrelevant."""
    from scipy import signal

    pole = rng.uniform(0.5, 0.95)
    x = signal.lfilter([1 - pole], [1, -pole], rng.standard_normal(n))
    return x / (np.abs(x).max() + 1e-9) * rng.uniform(0.3, 0.9)


def _trials(
    spk_utts: Dict[str, List[str]], n: int, n_target: int, rng, have=()
) -> List[Tuple[str, str, int]]:
    """``have`` plus random target and non-target pairs, no pair twice, up to ``n``
    trials of which ``n_target`` targets (as far as ``have`` allows)."""
    speakers = sorted(spk_utts)
    seen = {(a, b) for a, b, _ in have}
    out = list(have)
    counts = [sum(lab == 1 for *_, lab in out), sum(lab == 0 for *_, lab in out)]
    while counts[0] < n_target or counts[1] < n - n_target:
        target = counts[0] < n_target
        if target:
            utts = spk_utts[speakers[rng.integers(len(speakers))]]
            a, b = rng.choice(len(utts), 2, replace=False)
            pair = (utts[a], utts[b])
        else:
            s, t = rng.choice(len(speakers), 2, replace=False)
            us, ut = spk_utts[speakers[s]], spk_utts[speakers[t]]
            pair = (us[rng.integers(len(us))], ut[rng.integers(len(ut))])
        pair = tuple(sorted(pair))
        if pair not in seen:
            seen.add(pair)
            out.append((*pair, int(target)))
            counts[0 if target else 1] += 1
    return out


def voxceleb_like_set(out: Path, shape: dict, rng) -> Tuple[Path, Path]:
    """(b): short noise utterances, the full trial list and a quarter of it that
    covers the same utterances; returns both trial directories."""
    import soundfile

    from espnet_plugin_intertopk.recipe.kaldi_data import write_trials

    wav_dir = out / "wav"
    wav_dir.mkdir(parents=True)
    per_spk = np.array_split(np.arange(shape["utterances"]), shape["speakers"])
    spk_utts = {
        f"vspk{s:02d}": [f"vspk{s:02d}-u{i:04d}" for i in idx]
        for s, idx in enumerate(per_spk)
    }
    wavs = {}
    utts = [u for us in spk_utts.values() for u in us]
    for utt in tqdm(utts, desc="(b) writing noise utterances", unit="utt"):
        n = int(rng.uniform(*VOX_DURATION) * SAMPLE_RATE)
        pcm = np.round(_noise(rng, n) * 32767).astype(np.int16)
        wavs[utt] = str((wav_dir / f"{utt}.wav").resolve())
        with atomic.atomic_open(wavs[utt], "wb") as f:
            soundfile.write(f, pcm, SAMPLE_RATE, format="WAV", subtype="PCM_16")
    # Every utterance in the quarter list: each speaker's utterances in shuffled
    # pairs (target trials), the rest random; the full list adds to the quarter.
    cover = []
    for us in spk_utts.values():
        order = [us[i] for i in rng.permutation(len(us))]
        if len(order) % 2:
            order.append(order[0])
        cover += [(*sorted(order[i : i + 2]), 1) for i in range(0, len(order), 2)]
    quarter = _trials(
        spk_utts, shape["trials"] // 4, shape["targets"] // 4, rng, have=cover
    )
    full = _trials(spk_utts, shape["trials"], shape["targets"], rng, have=quarter)
    dirs = []
    for name, trials in (("valid", full), ("valid_quarter", quarter)):
        (out / name).mkdir()
        write_trials(
            out / name, [trials[i] for i in rng.permutation(len(trials))], wavs
        )
        dirs.append(out / name)
    return dirs[0], dirs[1]


def shape_file(trial_dir: Path) -> Path:
    from espnet_plugin_intertopk.recipe.kaldi_data import write_shape_file

    out = trial_dir.parent / f"{trial_dir.name}_shape"
    write_shape_file(trial_dir / "trial.scp", out)
    return out


def list_size(trial_dir: Path) -> Tuple[int, int, int]:
    """(trials, target trials, unique utterances) of a trial directory."""
    from espnet_plugin_intertopk.recipe.kaldi_data import read_map

    labels = read_map(trial_dir / "trial_label")
    utts = {u for k in labels for u in k.split("*")}
    return len(labels), sum(v == "1" for v in labels.values()), len(utts)


# --------------------------------------------------------------------------- worker


class CountingLoader(dict):
    """Wraps one of ESPnet's loaders (a mapping) and counts the items read."""

    def __init__(self, loader, counter: List[int]):
        super().__init__()
        self.loader, self.counter = loader, counter

    def __getitem__(self, key):
        self.counter[0] += 1
        return self.loader[key]

    def __contains__(self, key):
        return key in self.loader

    def keys(self):
        return self.loader.keys()

    def __iter__(self):
        return iter(self.loader)

    def __len__(self):
        return len(self.loader)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    """Reset VmHWM to the current resident set (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _setup(case: dict):
    """The parsed options of a case and its validation iterator factory, with the
    audio reads of its dataset counted into the returned one-element list."""
    from espnet2.train.distributed_utils import DistributedOption

    from espnet_plugin_intertopk.train.loss_options import split_loss_options
    from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask

    d = case["trial_dir"]
    argv = [
        "--config", str(CONFIG), "--ngpu", "0", "--use_preprocessor", "true",
        "--num_workers", "0", "--spk_num", str(SPK_NUM), "--fold_length", "120000",
        "--valid_data_path_and_name_and_type", f"{d}/trial.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{d}/trial2.scp,speech2,sound",
        "--valid_data_path_and_name_and_type", f"{d}/trial_label,spk_labels,text",
        "--valid_shape_file", case["shape"],
        "--valid_unique_utterances", str(case["method"] != "espnet").lower(),
        *case["extra"],
    ]  # fmt: skip
    args = IntertopkSpeakerTask.get_parser().parse_args(argv)
    split_loss_options(args)
    factory = IntertopkSpeakerTask.build_iter_factory(
        args, DistributedOption(distributed=False), "valid"
    )
    dataset = factory.dataset if case["method"] == "espnet" else factory.base.dataset
    reads = [0]
    for side in ("speech", "speech2"):
        dataset.loader_dict[side] = CountingLoader(dataset.loader_dict[side], reads)
    return args, factory, reads


def _model(args):
    """The task's model, seed 0: the same initial model in every process."""
    import torch
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed

    from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask

    torch.set_num_threads(1)
    set_all_random_seed(0)
    model = IntertopkSpeakerTask.build_model(args).eval()
    crop = args.preprocessor_conf
    with torch.no_grad():  # first-call overheads out of the measurements
        samples = int(crop["target_duration"] * crop["sample_rate"])
        model(speech=torch.zeros(2, samples), spk_labels=None, extract_embd=True)
    return model


def _validate(method: str, model, args, factory) -> Dict[str, float]:
    """One validation by ``method``; what it reports (embed once: the count)."""
    import torch

    from espnet_plugin_intertopk.train.trainer import validation_stats
    from espnet_plugin_intertopk.train.validation import embed_utterances

    iterator = factory.build_iter(1)
    if method == "embed":
        with torch.no_grad():
            embeddings = embed_utterances(model, iterator, torch.device("cpu"))
        return {"utterances": len(embeddings)}
    stats = validation_stats(args, model, iterator)
    return {k: float(v) for k, v in stats.items()}


def worker_timing(cases: List[dict], rounds: int) -> List[dict]:
    """Time the cases of one data set in one process, taking turns round by round,
    so that a change in the machine's load slows them alike; ESPnet's method (long)
    once, in the middle round."""
    setups = [_setup(case) for case in cases]
    model = _model(setups[0][0])
    out = [dict(seconds=[], crop=dict(args.preprocessor_conf)) for args, _, _ in setups]
    for r in range(rounds):
        for case, (args, factory, reads), res in zip(cases, setups, out):
            if case["method"] == "espnet" and r != rounds // 2:
                continue
            reads[0] = 0
            start = time.perf_counter()
            res["stats"] = _validate(case["method"], model, args, factory)
            res["seconds"].append(time.perf_counter() - start)
            res["reads"] = reads[0]
    return out


def worker_memory(case: dict) -> dict:
    """The rise of the resident set during one validation, in a fresh process."""
    import gc

    args, factory, reads = _setup(case)
    model = _model(args)
    gc.collect()
    reset = _reset_peak()
    base = _status_kib("VmRSS" if reset else "VmHWM")
    stats = _validate(case["method"], model, args, factory)
    peak = (_status_kib("VmHWM") - base) / 1024
    return dict(peak_mib=peak, peak_reset=reset, reads=reads[0], stats=stats)


def run_worker(kind: str, job):
    """Run a worker in a fresh process; its JSON answer."""
    env = dict(
        os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore"
    )
    if kind == "memory":
        env["MALLOC_MMAP_THRESHOLD_"] = str(MMAP_THRESHOLD)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind]
    proc = subprocess.run(
        cmd + ["--job", json.dumps(job)], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} worker failed on {job}:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _revision() -> str:
    """The commit measured, marked when the package or config differ from it."""

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(ROOT), *args]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", "espnet_plugin_intertopk", "conf")
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {head}" + (" with local changes" if dirty.strip() else "")


def prepare(work: Path, quick: bool) -> List[dict]:
    """Generate both data sets; the benchmark's cases, in the order they run."""
    a_dir = recipe_set(work / "a", quick)
    rng = np.random.default_rng(0)
    b_full, b_quarter = voxceleb_like_set(work / "b", VOX_QUICK if quick else VOX, rng)
    b_extra = ["--preprocessor_conf", f"target_duration={VOX_CROP}"]
    all_methods = ("espnet", "plugin", "embed")
    # (set, trial directory, preprocessor overrides, methods, set of its embed once,
    # timing process)
    sets = [
        ("(a) recipe", a_dir, [], all_methods, "(a) recipe", "a"),
        (VOX_NAME, b_full, b_extra, all_methods, VOX_NAME, "b"),
        # Same utterances, so the same embed-once lower bound as (b).
        ("(b) 1/4 of the trials", b_quarter, b_extra, ("plugin",), VOX_NAME, "b"),
    ]
    cases = []
    for name, trial_dir, extra, methods, reference, group in sets:
        shape = str(shape_file(trial_dir))
        for method in methods:
            cases.append(
                dict(
                    set=name,
                    reference=reference,
                    group=group,
                    method=method,
                    trial_dir=str(trial_dir),
                    shape=shape,
                    extra=extra,
                    size=list_size(trial_dir),
                )
            )
    return cases


def table(cases: List[dict], results: List[dict]) -> List[str]:
    def median(r):
        return float(np.median(r["seconds"]))

    by = {(c["set"], c["method"]): r for c, r in zip(cases, results)}
    names = {"espnet": "ESPnet", "plugin": "plugin", "embed": "embed once"}
    lines = [
        "| data set | trials (target) | unique utts | crop | method | s per "
        "validation | audio segments loaded | peak memory increase MiB | "
        "ESPnet / plugin time | plugin / embed-once time | EER % | minDCF |",
        "|---|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c, r in zip(cases, results):
        n, targets, utts = c["size"]
        crop = r["crop"]
        esp = by.get((c["set"], "espnet"))
        emb = by.get((c["reference"], "embed"))
        ratio_esp = ratio_emb = "-"
        if c["method"] == "plugin":
            if esp:
                ratio_esp = f"{median(esp) / median(r):.1f}x"
            if emb:
                ratio_emb = f"{median(r) / median(emb):.2f}x"
        s = r["stats"]
        lines.append(
            f"| {c['set']} | {n:,} ({targets:,}) | {utts:,} | "
            f"{crop['num_eval']} x {crop['target_duration']} s | "
            f"{names[c['method']]} | {median(r):.2f} | {r['reads']:,} | "
            f"{r['peak_mib']:.1f} | {ratio_esp} | {ratio_emb} | "
            + (f"{s['eer']:.4f} | {s['mindcf']:.4f} |" if "eer" in s else "- | - |")
        )
    return lines


@exits_cleanly(TOOL)
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir",
        type=Path,
        help="generate the data here and keep it (a new or empty directory, or one "
        "this benchmark made; default: a temporary directory, removed at the end)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="validations per method in the timing process, the methods taking "
        "turns (median reported); ESPnet's method runs once, in the middle round",
    )
    parser.add_argument(
        "--quick", action="store_true", help="small lists (a smoke run)"
    )
    parser.add_argument(
        "--worker", choices=("timing", "memory"), help=argparse.SUPPRESS
    )
    parser.add_argument("--job", help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.worker == "timing":
        job = json.loads(a.job)
        print(json.dumps(worker_timing(job["cases"], job["rounds"])))
        return
    if a.worker == "memory":
        print(json.dumps(worker_memory(json.loads(a.job))))
        return
    if a.rounds < 1:
        parser.error("--rounds must be at least 1")

    started = datetime.datetime.now().astimezone()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="validation_speed-") as tmp:
        if a.workdir is None:
            work = Path(tmp)
        else:
            if ownership.made_by(a.workdir) == TOOL:
                ownership.remove_owned(a.workdir, TOOL)  # an earlier run's data
            work = ownership.claim_dir(a.workdir, TOOL, "--workdir")
        cases = prepare(work, a.quick)
        groups: Dict[str, List[int]] = {}
        for i, case in enumerate(cases):
            groups.setdefault(case["group"], []).append(i)
        results: List[dict] = [{} for _ in cases]
        with tqdm(total=len(groups) + len(cases), desc="processes", unit="proc") as bar:
            for members in groups.values():
                job = dict(cases=[cases[i] for i in members], rounds=a.rounds)
                for i, timing in zip(members, run_worker("timing", job)):
                    results[i] = timing
                bar.update()
                for i in members:
                    memory = run_worker("memory", cases[i])
                    same = (memory["reads"], memory["stats"]) == (
                        results[i]["reads"],
                        results[i]["stats"],
                    )
                    if not same:
                        raise SystemExit(f"{cases[i]}: the processes disagree")
                    results[i].update(memory)
                    bar.update()
    wall = time.perf_counter() - t0

    import torch

    print(
        f"\nValidation speed, {started:%Y-%m-%d %H:%M %Z}, {_revision()}: "
        f"{_cpu_name()}, "
        f"{os.cpu_count()} CPUs (shared), {platform.system()} {platform.release()}, "
        f"torch {torch.__version__}; one thread per process, DataLoader workers off"
        f"{', --quick' if a.quick else ''}. Model: conf/train.yaml (x-vector TDNN), "
        "seed 0, untrained: its EERs are near 50 % and show that the methods agree, "
        "not what a trained model gets. (b) is shrunk from VoxCeleb1-O: utterances "
        f"of {VOX_DURATION[0]}-{VOX_DURATION[1]} s of low-passed noise (VoxCeleb1-O: "
        f"about 8 s of speech), valid crop target_duration {VOX_CROP} s (the "
        "recipe's 1.5 s), num_eval 3 as the recipe's, and the recipe's small "
        "x-vector model rather than a VoxCeleb-sized one. Seconds: one process per "
        "data set, the methods taking turns, median of "
        f"{a.rounds} rounds (ESPnet's method once, in the middle round); peak memory "
        "from one validation in a fresh process per row, glibc's mmap threshold "
        f"fixed at {MMAP_THRESHOLD // 1024} KiB (see the script's docstring). Total "
        f"wall time {wall:.0f} s.\n"
    )
    for line in table(cases, results):
        print(line)
    if not all(r["peak_reset"] for r in results):
        print(
            "\nPeak memory: this kernel refused to reset the peak, so the increase "
            "is over the peak before validation (it may read 0)."
        )


if __name__ == "__main__":
    main()
