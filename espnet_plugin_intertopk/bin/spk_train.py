"""``python -m espnet_plugin_intertopk.bin.spk_train``: ESPnet's spk_train, plugin
registered.

Takes every option of ``python -m espnet2.bin.spk_train`` (``--print_config``
included), plus ``--margin_scheduler`` and ``--margin_scheduler_conf``.
"""

from espnet_plugin_intertopk.safe_io.errors import exits_cleanly
from espnet_plugin_intertopk.train.task import IntertopkSpeakerTask


def get_parser():
    return IntertopkSpeakerTask.get_parser()


@exits_cleanly("spk_train")
def main(cmd=None):
    IntertopkSpeakerTask.main(cmd=cmd)


if __name__ == "__main__":
    main()
