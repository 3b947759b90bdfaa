"""Recipe tools: the synthetic corpus, Kaldi-style data checks, the MFCC floor and
the experiment summaries (scoring itself is in ``espnet_plugin_intertopk.scoring``).

They read and write files only; nothing here imports the loss, its kernels or the
training hooks.
"""
