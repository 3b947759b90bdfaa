"""The fused CPU backend: the C++ kernels of ``cpu_kernels.cpp``, built at first use.

``compile_kernels: true`` on CPU runs the loss through ``forward_tiles`` /
``backward_tiles``: products and element-wise work tile by tile in cache (see the C++
file for why), keeping each cosine's sub-center maximum for the backward (dense) or
recomputing it there (memory-bounded, with a class chunk size). The extension is
compiled by ``torch.utils.cpp_extension`` with the machine's C++ compiler and ninja,
once per machine type (about 30 s; cached in ``$TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``).
"""

import logging
import os
import platform
import shutil
from types import ModuleType
from typing import Optional

import torch

from espnet_plugin_intertopk.kernels.backend import (
    ForwardResult,
    GradientBuffer,
    Gradients,
    KernelBackend,
)

# Classes per tile: K x batch x tile floats of products must stay in one core's L2
# (3 x 256 x 256 x 4 B = 768 KiB); 128 and 512 measured 1-2 ms slower per step.
TILE = 256

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu_kernels.cpp")
_module: Optional[ModuleType] = None


def _isa_flags() -> list:
    """Vector ISA flags for the CPU capability that PyTorch detected.

    Not -march=native: a build cached in a shared home directory must not be loaded on
    an older CPU that lacks its instructions, so the ISA is part of the extension name.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    if platform.machine() in ("x86_64", "AMD64"):
        if capability.startswith("AVX512"):
            return [
                "-mavx512f",
                "-mavx512bw",
                "-mavx512vl",
                "-mavx512dq",
                "-mavx2",
                "-mfma",
            ]
        if capability.startswith("AVX2"):
            return ["-mavx2", "-mfma"]
    return []


def build_problem() -> str:
    """Why the extension cannot be built here ('' if it can): a C++ compiler and ninja
    are needed."""
    if _module is not None:
        # Checked at every step by the selection: once built, no compiler is needed
        # (and no `ninja --version` subprocess runs on the training path).
        return ""
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler {compiler!r} on PATH (set CXX or install one)"
    if not cpp_extension.is_ninja_available():
        return "ninja is not installed (pip install ninja)"
    return ""


def load() -> ModuleType:
    """The compiled extension (built on the first call of a process, or loaded from the
    cache). Raises RuntimeError with the compiler's message when it cannot be built."""
    global _module
    if _module is None:
        from torch.utils import cpp_extension

        capability = torch.backends.cpu.get_cpu_capability().lower()
        name = f"espnet_plugin_intertopk_cpu_{platform.machine().lower()}_{capability}"
        logging.info(
            "compile_kernels: building or loading %s (first build ~30 s)", name
        )
        _module = cpp_extension.load(
            name=name,
            sources=[_SOURCE],
            extra_cflags=["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
            + _isa_flags(),
            extra_ldflags=["-fopenmp"],
        )
    return _module


class FusedCpuBackend(KernelBackend):
    """The C++ tile kernels.

    Args:
        recompute: Keep nothing per class; the backward recomputes each tile.
    """

    def __init__(self, recompute: bool):
        self.kernels = load()
        self.recompute = recompute

    def forward(self, xn, weight, label, c, keep) -> ForwardResult:
        best, arg, *stats = self.kernels.forward_tiles(
            xn, weight, label, c.K, c.scale, c.k_top, TILE, keep
        )
        # After best and arg, the C++ side returns the ForwardResult fields in order
        # (inv_norm, row statistics, candidates; see cpu_kernels.cpp).
        return ForwardResult(*stats, kept=(best, arg) if keep else (), workspace=None)

    def backward(
        self,
        xn,
        weight,
        label,
        inv_norm,
        lse,
        coef,
        c,
        kept,
        workspace,
        grad_buffer: GradientBuffer,
    ) -> Gradients:
        # The kernels leave best and arg intact, so a second backward can read them too.
        best, arg = kept if kept else (None, None)
        if coef.dim():
            # One coefficient per row (the class-sharded loss): exp(z - lse) * coef is
            # exp(z - (lse - log coef)), so the kernels keep their single scalar.
            coef = coef.reshape(-1)
            if bool((coef < 0).any()):
                raise ValueError("per-row gradient coefficients must be >= 0 here")
            lse = lse - torch.log(coef)
            coef = coef.new_ones(())
        grad_x, grad_w = self.kernels.backward_tiles(
            xn,
            weight,
            label,
            best,
            arg,
            inv_norm,
            lse,
            coef.item(),
            c.scale,
            TILE,
            grad_buffer.tensor,
        )
        # Another tensor object on the same memory: autograd still takes grad_w itself
        # as .grad, and the next step can tell whether that was dropped.
        grad_buffer.tensor = grad_w.detach()
        return Gradients(grad_x, grad_w)
