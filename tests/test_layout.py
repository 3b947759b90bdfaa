"""The package's layers: the recipe and scoring tools do not pull in the loss, and the
package import is light but still registers the loss when ESPnet's speaker task is
imported."""

import subprocess
import sys


def _run(code: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_recipe_and_scoring_tools_import_without_the_loss_or_espnet_tasks():
    code = (
        "import sys\n"
        "import espnet_plugin_intertopk.recipe.synthetic_corpus\n"
        "import espnet_plugin_intertopk.recipe.kaldi_data\n"
        "import espnet_plugin_intertopk.scoring.compare\n"
        "import espnet_plugin_intertopk.scoring.espnet_scores\n"
        "heavy = [m for m in sys.modules if m.startswith(('espnet2.tasks', 'torch'))\n"
        "         or m.startswith('espnet_plugin_intertopk.')\n"
        "         and not m.startswith(('espnet_plugin_intertopk.recipe',\n"
        "                               'espnet_plugin_intertopk.scoring',\n"
        "                               'espnet_plugin_intertopk.registration',\n"
        "                               'espnet_plugin_intertopk.safe_io'))]\n"
        "print(heavy)"
    )
    assert _run(code) == "[]"


def test_public_import_paths():
    """The package import alone registers the loss (when ESPnet's task is imported
    after it, also when the loss class was imported before without the task), and the
    public names stay where they were."""
    code = (
        "import sys\n"
        "import espnet_plugin_intertopk\n"
        "from espnet_plugin_intertopk import ArcMarginProduct_intertopk_subcenter\n"
        "L = ArcMarginProduct_intertopk_subcenter\n"
        "light = 'espnet2.tasks.spk' not in sys.modules  # the loss alone: no task\n"
        "from espnet2.tasks.spk import loss_choices\n"
        "registered = loss_choices.get_class('aamsoftmax_sc_topk')\n"
        "from espnet_plugin_intertopk.registration import register_loss\n"
        "from espnet_plugin_intertopk.bin import spk_train, spk_embed_extract\n"
        "print(light, registered is L, callable(register_loss),"
        " callable(spk_train.main), callable(spk_embed_extract.main))"
    )
    assert _run(code) == "True True True True True"


def test_scale_summary_needs_neither_espnet_nor_torch():
    """It reads JSON only; matplotlib comes in for the plot alone, and even then
    without torch or ESPnet."""
    code = (
        "import sys, tempfile, pathlib\n"
        "from espnet_plugin_intertopk.recipe import scale_summary as s\n"
        "def heavy():\n"
        "    return sorted({m.split('.')[0] for m in sys.modules\n"
        "                   if m.split('.')[0] in ('torch', 'espnet', 'espnet2',\n"
        "                                          'matplotlib')})\n"
        "at_import = heavy()\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    line = s.Series('m', [100], [1.0], [0.5], [0.5])\n"
        "    s.draw(pathlib.Path(d) / 'p.png', [line], [line], [100], 'r', 'asnorm')\n"
        "print(at_import, heavy())"
    )
    assert _run(code) == "[] ['matplotlib']"
