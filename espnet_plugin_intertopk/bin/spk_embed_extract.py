"""``python -m espnet_plugin_intertopk.bin.spk_embed_extract``: ESPnet's embedding
extraction, with the plugin's losses registered so that a model trained with them is
rebuilt with the plugin classes, and its lists checked first (one line for a bad one,
for an output among the inputs, or for files ESPnet would remove). Takes every option
of ``espnet2.bin.spk_embed_extract``.
"""

from pathlib import Path

from espnet2.bin.spk_embed_extract import get_parser
from espnet2.bin.spk_embed_extract import main as espnet_main

import espnet_plugin_intertopk  # noqa: F401  (registers the plugin losses)
from espnet_plugin_intertopk.safe_io.errors import UserError, exits_cleanly
from espnet_plugin_intertopk.train.input_check import check_inputs

__all__ = ["get_parser", "main"]


@exits_cleanly("spk_embed_extract")
def main(cmd=None):
    args = get_parser().parse_args(cmd)
    # ESPnet merges the partial files embeddings*.npz of --output_dir, then removes
    # every one of them: one already there is not this run's.
    stray = sorted(Path(args.output_dir).glob("embeddings*.npz"))
    if stray:
        raise UserError(
            f"--output_dir {args.output_dir}: {stray[0].name} is there, and ESPnet's "
            "extraction removes every embeddings*.npz of its output directory: move "
            "it away or give another directory",
            status=2,
        )
    lists = args.data_path_and_name_and_type
    set_name = Path(lists[0][0]).parent.name if lists else ""  # as ESPnet names it
    check_inputs(
        {"--data_path_and_name_and_type": lists},
        {"--output_dir": str(Path(args.output_dir) / f"{set_name}_embeddings.npz")},
        {
            "--shape_file": args.shape_file,
            "--spk_model_file": [args.spk_model_file],
            "--spk_train_config": [args.spk_train_config],
        },
    )
    espnet_main(cmd)


if __name__ == "__main__":
    main()
