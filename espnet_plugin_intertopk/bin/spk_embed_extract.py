"""``python -m espnet_plugin_intertopk.bin.spk_embed_extract``: ESPnet's embedding
extraction, with the plugin's losses registered so that a model trained with them is
rebuilt with the plugin classes, and its lists checked first (one line for a bad one,
or for an output directory among the inputs). Takes every option of
``espnet2.bin.spk_embed_extract``.
"""

from espnet2.bin.spk_embed_extract import get_parser
from espnet2.bin.spk_embed_extract import main as espnet_main

import espnet_plugin_intertopk  # noqa: F401  (registers the plugin losses)
from espnet_plugin_intertopk.safe_io.errors import exits_cleanly
from espnet_plugin_intertopk.train.input_check import check_inputs

__all__ = ["get_parser", "main"]


@exits_cleanly("spk_embed_extract")
def main(cmd=None):
    args = get_parser().parse_args(cmd)
    check_inputs(
        {"--data_path_and_name_and_type": args.data_path_and_name_and_type},
        args.output_dir,
        {
            "--shape_file": args.shape_file,
            "--spk_model_file": [args.spk_model_file],
            "--spk_train_config": [args.spk_train_config],
        },
    )
    espnet_main(cmd)


if __name__ == "__main__":
    main()
