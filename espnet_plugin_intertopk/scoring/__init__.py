"""Every score transformation and its metrics, in one place: ``normalisation``
(cosine, AS-norm), ``calibration`` (quality-measure calibration), ``metrics`` (EER,
minDCF, actual DCF, Cllr, minCllr, the paired bootstrap), ``inputs`` (checked trial
lists, embeddings, durations), and the commands ``compare`` (the recipe's results
tables) and ``espnet_scores`` (calibration of ESPnet's score files).

Like the recipe tools they read and write files only; nothing here imports the loss,
its kernels or the training hooks.
"""
