"""Private: the numerical kernels of the loss behind one interface.

``function``: the autograd function (margins, merging, gradient correction), the same
for every backend. ``backend``: the interface a backend implements. ``selection``: the
one place that picks a backend. Backends: ``blocks`` (PyTorch ops per block of classes,
eager or ``torch.compile``; the reference path) and ``fused_cpu`` (C++ tiles).
"""
