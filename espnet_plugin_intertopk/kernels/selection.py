"""The one place that decides which kernel backend runs the loss.

| device      | compile_kernels | chunk size | backend                            |
|-------------|-----------------|------------|------------------------------------|
| any         | false           | None / N   | blocks, eager ops, dense / chunked |
| CPU         | true            | None / N   | fused C++ tiles, dense / recompute |
| accelerator | true            | None / N   | blocks, torch.compile ops          |

``compile_kernels: true`` needs a C++ compiler and ninja on CPU (checked here, with a
clear error) and ``torch.compile`` elsewhere.
"""

import functools
import logging
from typing import Optional

import torch

from espnet_plugin_intertopk.kernels import block_ops, fused_cpu
from espnet_plugin_intertopk.kernels.backend import KernelBackend
from espnet_plugin_intertopk.kernels.blocks import BlockBackend


@functools.lru_cache(maxsize=None)
def _warn_unmeasured(device_type: str) -> None:
    logging.warning(
        "compile_kernels on %s: the torch.compile block kernels have been tested "
        "on CPU only and are not yet measured on a GPU; compare a step with "
        "compile_kernels: false before relying on them",
        device_type,
    )


def select_backend(
    device: torch.device, class_chunk_size: Optional[int], compile_kernels: bool
) -> KernelBackend:
    """The backend for a loss with these options on ``device``.

    Raises:
        RuntimeError: ``compile_kernels`` where its compiler is missing.
    """
    if not compile_kernels:
        return BlockBackend(block_ops.EAGER, class_chunk_size, device)
    if device.type == "cpu":
        problem = fused_cpu.build_problem()
        if problem:
            raise RuntimeError(
                f"compile_kernels: true on CPU builds C++ kernels, but {problem}; "
                "set compile_kernels: false for the eager kernels (same numbers)"
            )
        return fused_cpu.FusedCpuBackend(recompute=class_chunk_size is not None)
    _warn_unmeasured(device.type)
    return BlockBackend(block_ops.compiled_ops(), class_chunk_size, device)
