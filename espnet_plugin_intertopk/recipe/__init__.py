"""Recipe tools: the synthetic corpus, Kaldi-style data checks and scoring.

They read and write files only; nothing here imports the loss, its kernels or the
training hooks.
"""
