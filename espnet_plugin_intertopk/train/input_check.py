"""The lists handed to ``spk_train`` or ``spk_embed_extract`` directly, checked at
start-up as the recipe's stage 1 checks them: a list ESPnet would misread (see
``kaldi_data.read_entries``), a ``--spk_num`` other than spk2utt's speakers, or an
output directory that is, contains or lies inside an input is one line before ESPnet
starts, not a traceback mid-training (or a wrong number of classes). Outputs are
what the tool writes: spk_train its whole output directory, the extraction its
embedding files."""

from typing import Dict, Iterable, Optional, Tuple

from espnet_plugin_intertopk.recipe.kaldi_data import read_entries
from espnet_plugin_intertopk.safe_io import ownership
from espnet_plugin_intertopk.safe_io.errors import UserError

# ESPnet's data types whose file is a Kaldi-style "<key> <value>" list.
LIST_TYPES = ("sound", "text", "kaldi_ark", "npy")


def check_inputs(
    data: Dict[str, Iterable[Tuple[str, str, str]]],
    outputs: Dict[str, str],
    files: Dict[str, Iterable[str]],
    spk2utt: Optional[str] = None,
    spk_num: Optional[int] = None,
) -> None:
    """Raise UserError for the first bad input.

    Args:
        data: option -> its (path, name, type) triples.
        outputs: option -> a directory or file the tool writes.
        files: option -> the other files it reads (shape files, models, configs).
        spk2utt: the speakers' list; its speakers must number ``spk_num``.
        spk_num: the number of classes asked for.
    """
    inputs: Dict[str, str] = {}
    for option, triples in data.items():
        for path, _, kind in triples or ():
            inputs[f"{option} {path}"] = path
            if kind in LIST_TYPES:
                read_entries(path)
    for option, paths in files.items():
        for path in paths:
            if path:
                inputs[f"{option} {path}"] = path
    if spk2utt:
        inputs[f"--spk2utt {spk2utt}"] = spk2utt
        speakers = len(read_entries(spk2utt))
        if spk_num is not None and spk_num != speakers:
            raise UserError(
                f"--spk_num {spk_num}: {spk2utt} lists {speakers} speakers; give "
                f"--spk_num {speakers}",
                status=2,
            )
    for option, path in outputs.items():
        if path:
            ownership.check_apart(path, inputs, option)
