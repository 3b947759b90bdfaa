"""ESPnet's own recipe command lines with ``--python espnet-intertopk-python``, and the
trained model in plain ESPnet.

The command lines are those of ``egs2/TEMPLATE/spk1/spk.sh`` (ESPnet 202511), stages 4
(collect stats), 5 (training through ``espnet2.bin.launch``), 6 (embedding extraction
through ``launch``) and 9 (packing), written out here with spk.sh's variables filled
in: ``python`` is the plugin's interpreter, ``train_cmd``/``cuda_cmd`` a minimal
stand-in for Kaldi's ``run.pl`` (``tests/tools/run.pl``), ``nj=2``, ``ngpu=0``,
``fs=16k``, ``feats_type=raw``, ``spk_config`` a tiny config with ``loss:
aamsoftmax_sc_topk``, ``margin_scheduler: exp`` and plugin-only loss options. The data
directories are laid out as spk.sh's stage 3 leaves them (``dump/raw/<set>``). Stages
7-8 run ESPnet's ``pyscripts``, which are not part of the installed package; a
stand-in RESULTS.md is packed in stage 9 instead.

Then the packed model is used where the plugin cannot be imported: ESPnet's
``Speech2Embedding`` and ``spk_embed_extract`` must give the embeddings that the plugin
side gave.
"""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from espnet2.bin.spk_inference import Speech2Embedding

from conftest import (
    N_TRAIN_SPK,
    PLUGIN_REPR,
    SCHEDULE,
    TESTS,
    TINY_CONFIG,
    epoch_results,
    expected_epoch_margins,
    reporter_stats,
)

pytestmark = pytest.mark.slow

PYTHON = str(Path(sys.executable).with_name("espnet-intertopk-python"))
RUN_PL = str(TESTS / "tools" / "run.pl")
NJ = 2
SPK_EXP = "exp/spk_train_tiny_raw"
STATS = "exp/spk_stats_16k"
INFERENCE_MODEL = "valid.eer.best.pth"
PACKED = f"{SPK_EXP}/spk_train_tiny_raw_valid.eer.best.zip"
# Options only the plugin's class takes, in loss_conf as a user writes them.
PLUGIN_ONLY = {"check_values": True, "class_chunk_size": 4, "return_accuracy": True}

# A process in which the plugin cannot be imported: plain ESPnet.
BLOCK_PLUGIN = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "espnet_plugin_intertopk":
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def sh(*cmd: str, cwd: Path) -> str:
    """Run one command line of the recipe; return its output or fail with it."""
    proc = subprocess.run(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-6000:]}"
    return proc.stdout


def stage3_layout(corpus: Path, recipe: Path) -> None:
    """dump/raw/<set> as spk.sh's stage 3 leaves it (category2utt = spk2utt)."""
    for name in ("train", "valid"):
        dst = recipe / "dump" / "raw" / name
        shutil.copytree(corpus / name, dst)
        shutil.copy(dst / "spk2utt", dst / "category2utt")


def write_config(recipe: Path) -> Path:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["max_epoch"] = 3
    config["loss_conf"].update(PLUGIN_ONLY)
    pairs = iter(SCHEDULE)
    for option, value in zip(pairs, pairs):
        key = option.lstrip("-")
        if key == "margin_scheduler":
            config[key] = value
        else:
            name, text = value.split("=")
            config.setdefault(key, {})[name] = yaml.safe_load(text)
    path = recipe / "conf" / "train_tiny.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    return path


def split_scp(scp: Path, outputs) -> None:
    """What utils/split_scp.pl does: the lines in contiguous, near-equal parts."""
    lines = scp.read_text().splitlines(keepends=True)
    for part, out in zip(np.array_split(np.arange(len(lines)), len(outputs)), outputs):
        out.write_text("".join(lines[i] for i in part))


@pytest.fixture(scope="module")
def recipe(tiny_corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("spk1")
    stage3_layout(tiny_corpus, root)
    config = write_config(root)
    # spk.sh's stage 6 reads the test trials' shapes from the validation set's stats,
    # so, as in ESPnet's VoxCeleb recipe, test_sets is the validation set here.
    train_dir, valid_dir = "dump/raw/train", "dump/raw/valid"
    test_dir = valid_dir
    spk_num = str(len((root / train_dir / "spk2utt").read_text().splitlines()))

    # Stage 4: collect stats, NJ jobs through ${train_cmd}, then aggregate.
    logdir = root / STATS / "logdir"
    logdir.mkdir(parents=True)
    split_scp(root / train_dir / "wav.scp", [logdir / f"train.{n}.scp" for n in (1, 2)])
    split_scp(
        root / valid_dir / "trial.scp", [logdir / f"valid.{n}.scp" for n in (1, 2)]
    )
    sh(
        RUN_PL, f"JOB=1:{NJ}", f"{STATS}/logdir/stats.JOB.log",
        PYTHON, "-m", "espnet2.bin.spk_train",
        "--collect_stats", "true",
        "--use_preprocessor", "false",
        "--train_data_path_and_name_and_type", f"{train_dir}/wav.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{valid_dir}/trial.scp,speech,sound",
        "--train_shape_file", f"{STATS}/logdir/train.JOB.scp",
        "--valid_shape_file", f"{STATS}/logdir/valid.JOB.scp",
        "--spk2utt", f"{train_dir}/spk2utt",
        "--spk_num", spk_num,
        "--output_dir", f"{STATS}/logdir/stats.JOB",
        "--config", str(config),
        cwd=root,
    )  # fmt: skip
    inputs = [a for n in (1, 2) for a in ("--input_dir", f"{STATS}/logdir/stats.{n}")]
    sh(
        PYTHON, "-m", "espnet2.bin.aggregate_stats_dirs", *inputs,
        "--skip_sum_stats", "--output_dir", STATS,
        cwd=root,
    )  # fmt: skip
    shutil.copy(
        root / STATS / "valid" / "speech_shape",
        root / STATS / "valid" / "speech_shape2",
    )

    # Stage 5: training through espnet2.bin.launch and ${cuda_cmd}.
    sh(
        PYTHON, "-m", "espnet2.bin.launch",
        "--cmd", f"{RUN_PL} --name {SPK_EXP}/train.log",
        "--log", f"{SPK_EXP}/train.log",
        "--ngpu", "0",
        "--num_nodes", "1",
        "--init_file_prefix", f"{SPK_EXP}/.dist_init_",
        "--multiprocessing_distributed", "true", "--",
        PYTHON, "-m", "espnet2.bin.spk_train",
        "--use_preprocessor", "true",
        "--resume", "true",
        "--ignore_init_mismatch", "false",
        "--output_dir", SPK_EXP,
        "--train_data_path_and_name_and_type", f"{train_dir}/wav.scp,speech,sound",
        "--train_data_path_and_name_and_type", f"{train_dir}/utt2spk,spk_labels,text",
        "--train_shape_file", f"{STATS}/train/speech_shape",
        "--valid_data_path_and_name_and_type", f"{valid_dir}/trial.scp,speech,sound",
        "--valid_data_path_and_name_and_type", f"{valid_dir}/trial2.scp,speech2,sound",
        "--valid_data_path_and_name_and_type",
        f"{valid_dir}/trial_label,spk_labels,text",
        "--spk2utt", f"{train_dir}/spk2utt",
        "--spk_num", spk_num,
        "--fold_length", "120000",
        "--valid_shape_file", f"{STATS}/valid/speech_shape",
        "--output_dir", SPK_EXP,
        "--config", str(config),
        cwd=root,
    )  # fmt: skip

    # Stage 6: embedding extraction of the test trials through launch.
    infer_exp = f"{SPK_EXP}/inference"
    sh(
        PYTHON, "-m", "espnet2.bin.launch",
        "--cmd", f"{RUN_PL} --name {infer_exp}/spk_embed_extraction.log",
        "--log", f"{infer_exp}/spk_embed_extraction_test.log",
        "--ngpu", "0",
        "--num_nodes", "1",
        "--init_file_prefix", f"{SPK_EXP}/.dist_init_",
        "--multiprocessing_distributed", "true", "--",
        PYTHON, "-m", "espnet2.bin.spk_embed_extract",
        "--use_preprocessor", "true",
        "--output_dir", infer_exp,
        "--data_path_and_name_and_type", f"{test_dir}/trial.scp,speech,sound",
        "--data_path_and_name_and_type", f"{test_dir}/trial2.scp,speech2,sound",
        "--data_path_and_name_and_type", f"{test_dir}/trial_label,spk_labels,text",
        "--shape_file", f"{STATS}/valid/speech_shape",
        "--fold_length", "120000",
        "--config", str(TESTS / "conf" / "tiny_decode.yaml"),
        "--spk_train_config", f"{SPK_EXP}/config.yaml",
        "--spk_model_file", f"{SPK_EXP}/{INFERENCE_MODEL}",
        cwd=root,
    )  # fmt: skip

    # Stage 9: packing (RESULTS.md stands in for stages 7-8's).
    (root / SPK_EXP / "RESULTS.md").write_text("# stand-in for stage 8's results\n")
    sh(
        PYTHON, "-m", "espnet2.bin.pack", "spk",
        "--train_config", f"{SPK_EXP}/config.yaml",
        "--model_file", f"{SPK_EXP}/{INFERENCE_MODEL}",
        "--option", f"{SPK_EXP}/RESULTS.md",
        "--option", f"{SPK_EXP}/images",
        "--outpath", PACKED,
        cwd=root,
    )  # fmt: skip
    return root


def test_stage4_collects_the_shapes_of_every_utterance(recipe):
    for split, listing in (("train", "train/wav.scp"), ("valid", "valid/trial.scp")):
        utts = [line.split()[0] for line in (recipe / "dump/raw" / listing).open()]
        shapes = (recipe / STATS / split / "speech_shape").read_text().splitlines()
        assert sorted(line.split()[0] for line in shapes) == sorted(utts)
    logs = sorted((recipe / STATS / "logdir").glob("stats.*.log"))
    assert len(logs) == NJ
    for log in logs:  # the plugin's task answered --collect_stats
        assert "# Ended (code 0)" in log.read_text()
        assert "espnet_plugin_intertopk/bin/spk_train.py" in log.read_text()


def test_stage5_trains_the_plugin_loss_with_the_scheduled_margin(recipe):
    exp = recipe / SPK_EXP
    log = (exp / "train.log").read_text()
    assert "espnet_plugin_intertopk/bin/spk_train.py" in log
    assert PLUGIN_REPR in log and "class_chunk_size=4" in log
    assert "check_values=True" in log
    epochs = epoch_results(log)
    assert sorted(epochs) == [1, 2, 3]
    stats = reporter_stats(exp)
    for epoch, value in expected_epoch_margins(stats).items():
        assert stats[epoch]["train"]["margin"] == pytest.approx(value, abs=1e-12)
        assert epochs[epoch]["train/margin"] == pytest.approx(value, abs=1e-3)
    assert epochs[1]["train/margin"] < epochs[2]["train/margin"] < 0.2
    assert epochs[3]["train/margin"] == 0.2
    assert (exp / "images" / "margin.png").stat().st_size > 0
    # Stock spk.sh's training validates with the plugin's method: every epoch, each
    # validation utterance embedded once (ESPnet's method logs no such line).
    shares = re.findall(r"validation: (\d+) of (\d+) utterances embedded here", log)
    assert len(shares) == 3 and all(a == b != "0" for a, b in shares)


def test_config_keeps_plugin_only_options_out_of_loss_conf(recipe):
    config = yaml.safe_load((recipe / SPK_EXP / "config.yaml").read_text())
    assert config["loss"] == "aamsoftmax_sc_topk"
    assert config["loss_plugin_conf"] == PLUGIN_ONLY
    assert not set(PLUGIN_ONLY) & set(config["loss_conf"])
    assert config["loss_conf"]["k_top"] == 2 and config["loss_conf"]["K"] == 3
    assert config["margin_scheduler"] == "exp"


def test_stage6_embeds_every_trial_utterance(recipe):
    embeddings = np.load(recipe / SPK_EXP / "inference" / "valid_embeddings.npz")
    utts = [line.split()[0] for line in (recipe / "dump/raw/valid/wav.scp").open()]
    assert sorted(embeddings.files) == sorted(utts)
    assert all(embeddings[u].shape[-1] == 32 for u in utts)


def test_stage9_packs_config_model_results_and_images(recipe):
    with zipfile.ZipFile(recipe / PACKED) as archive:
        names = set(archive.namelist())
        meta = yaml.safe_load(archive.read("meta.yaml"))
    # ESPnet packs the file that the valid.eer.best.pth link points to.
    best = (recipe / SPK_EXP / INFERENCE_MODEL).resolve().relative_to(recipe)
    assert {
        "meta.yaml",
        f"{SPK_EXP}/config.yaml",
        str(best),
        f"{SPK_EXP}/RESULTS.md",
        f"{SPK_EXP}/images/margin.png",
        f"{SPK_EXP}/images/loss.png",
    } <= names
    assert meta["files"] == {"model_file": str(best)}
    assert meta["yaml_files"] == {"train_config": f"{SPK_EXP}/config.yaml"}


PLAIN_ESPNET = (
    BLOCK_PLUGIN
    + """
import numpy as np, os, soundfile, sys
from espnet2.bin.spk_embed_extract import main as extract
from espnet2.bin.spk_inference import Speech2Embedding
from espnet2.main_funcs.pack_funcs import unpack
from espnet2.tasks.spk import loss_choices
try:
    import espnet_plugin_intertopk
    sys.exit("the plugin was importable")
except ImportError:
    pass
assert loss_choices.get_class("aamsoftmax_sc_topk").__module__.startswith("espnet2.")
packed, out, test_dir, shape, decode = sys.argv[1:6]
files = unpack(packed, out + "/unpacked")
embed = Speech2Embedding(files["train_config"], files["model_file"])
# ESPnet's own loss class with the trained weights: as plain ESPnet trains (no
# update(), so its hard-negative penalty is off), after update(margin), unlabelled.
import torch
loss = embed.spk_model.loss
gen = torch.Generator().manual_seed(0)
x = torch.randn(24, loss.weight.shape[1], generator=gen)
labels = torch.arange(24) % loss.out_features
with torch.no_grad():
    as_trained = loss(x, labels)
    unlabelled = loss(x, None)[2]
    loss.update(loss.margin)
    updated = loss(x, labels)
torch.save({"x": x, "labels": labels, "as_trained": as_trained,
            "unlabelled": unlabelled, "updated": updated}, out + "/plain_loss.pt")
wavs = [line.split()[1] for line in open(test_dir + "/wav.scp")][:3]
np.savez(out + "/speech2embedding.npz",
         *[embed(soundfile.read(w, dtype="float32")[0]).numpy() for w in wavs])
os.makedirs(out + "/extract")
extract([
    "--output_dir", out + "/extract",
    "--data_path_and_name_and_type", test_dir + "/trial.scp,speech,sound",
    "--data_path_and_name_and_type", test_dir + "/trial2.scp,speech2,sound",
    "--data_path_and_name_and_type", test_dir + "/trial_label,spk_labels,text",
    "--shape_file", shape, "--fold_length", "120000", "--config", decode,
    "--spk_train_config", files["train_config"],
    "--spk_model_file", files["model_file"], "--ngpu", "0",
])
"""
)


def test_plain_espnet_embeds_with_the_packed_model_as_the_plugin_does(recipe, tmp_path):
    test_dir = recipe / "dump/raw/valid"
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN_ESPNET, str(recipe / PACKED), str(tmp_path)]
        + [str(test_dir), str(recipe / STATS / "valid" / "speech_shape")]
        + [str(TESTS / "conf" / "tiny_decode.yaml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=recipe,
    )
    assert proc.returncode == 0, proc.stdout[-6000:]
    # spk_embed_extract: plain ESPnet against stage 6 (the plugin's interpreter).
    plain = np.load(tmp_path / "extract" / "valid_embeddings.npz")
    plugin = np.load(recipe / SPK_EXP / "inference" / "valid_embeddings.npz")
    assert sorted(plain.files) == sorted(plugin.files)
    diff = max(float(np.abs(plain[u] - plugin[u]).max()) for u in plugin.files)
    assert diff <= 1e-5, diff
    # Speech2Embedding: plain ESPnet against this process, where the plugin is loaded.
    embed = Speech2Embedding(recipe / SPK_EXP / "config.yaml", recipe / SPK_EXP /
                             INFERENCE_MODEL)  # fmt: skip
    assert type(embed.spk_model.loss).__module__ == "espnet_plugin_intertopk.loss"
    wavs = [line.split()[1] for line in (test_dir / "wav.scp").open()][:3]
    plain = np.load(tmp_path / "speech2embedding.npz")
    for i, wav in enumerate(wavs):
        ours = embed(soundfile.read(wav, dtype="float32")[0]).numpy()
        assert np.abs(plain[f"arr_{i}"] - ours).max() <= 1e-5
        assert np.abs(ours).max() > 0
    # The loss: plain ESPnet's class on the loaded weights against the plugin's.
    from espnet_plugin_intertopk.loss import ArcMarginProduct_intertopk_subcenter

    plain_loss = torch.load(tmp_path / "plain_loss.pt", weights_only=False)
    x, labels = plain_loss["x"], plain_loss["labels"]
    ours = embed.spk_model.loss
    conf = yaml.safe_load((recipe / SPK_EXP / "config.yaml").read_text())["loss_conf"]
    penalty_off = ArcMarginProduct_intertopk_subcenter(
        nout=x.shape[1], nclasses=ours.out_features, **{**conf, "k_top": 0}
    )
    penalty_off.load_state_dict(ours.state_dict())
    with torch.no_grad():
        for plugin, name in ((penalty_off, "as_trained"), (ours, "updated")):
            loss, accuracy, preds = plugin(x, labels)
            want_loss, want_accuracy, want_preds = plain_loss[name]
            assert loss.item() == pytest.approx(want_loss.item(), rel=1e-5), name
            assert accuracy.item() == want_accuracy.item(), name
            assert torch.equal(preds, want_preds), name
        assert torch.equal(ours(x, None)[2], plain_loss["unlabelled"])
    # The penalty acts (the two plain values differ), so the comparison is not
    # between two copies of one number.
    assert plain_loss["updated"][0].item() > plain_loss["as_trained"][0].item() + 1e-4


def test_trained_loss_rebuilds_under_the_plugin_with_every_option(recipe):
    from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask

    model, _ = IntertopkSpeakerTask.build_model_from_file(
        recipe / SPK_EXP / "config.yaml", recipe / SPK_EXP / INFERENCE_MODEL
    )
    loss = model.loss
    assert (loss.check_values, loss.class_chunk_size, loss.return_accuracy) == (
        True,
        4,
        True,
    )
    saved = torch.load(recipe / SPK_EXP / INFERENCE_MODEL, weights_only=False)
    assert torch.equal(loss.weight.detach(), saved["loss.weight"])
    assert loss.out_features == N_TRAIN_SPK
