"""``python -m espnet_plugin_intertopk.bin.spk_embed_extract``: ESPnet's embedding
extraction, with the plugin's losses registered so that a model trained with them is
rebuilt with the plugin classes. Takes every option of
``espnet2.bin.spk_embed_extract``.
"""

from espnet2.bin.spk_embed_extract import get_parser, main

import espnet_plugin_intertopk  # noqa: F401  (registers the plugin losses)

__all__ = ["get_parser", "main"]

if __name__ == "__main__":
    main()
