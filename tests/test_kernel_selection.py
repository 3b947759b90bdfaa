"""The one selection function: which backend runs for each combination of options."""

import logging

import pytest
import torch

from espnet_plugin_intertopk.kernels import block_ops, blocks, fused_cpu, selection

from conftest import needs_cpu_compiler

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("chunk", [None, 64])
def test_eager_blocks_without_compile_kernels_on_any_device(chunk):
    for device in (CPU, CUDA):
        backend = selection.select_backend(device, chunk, False)
        assert isinstance(backend, blocks.BlockBackend)
        assert backend.ops is block_ops.EAGER
        assert backend.recompute is (chunk is not None)
    dense_cpu = selection.select_backend(CPU, None, False)
    dense_cuda = selection.select_backend(CUDA, None, False)
    assert (dense_cpu.block, dense_cuda.block) == (
        blocks.DENSE_BLOCK,
        blocks.DENSE_BLOCK_ACCELERATOR,
    )
    if chunk is not None:
        assert selection.select_backend(CPU, chunk, False).block == chunk


@needs_cpu_compiler
@pytest.mark.parametrize("chunk", [None, 64])
def test_fused_cpu_kernels_with_compile_kernels_on_cpu(chunk):
    backend = selection.select_backend(CPU, chunk, True)
    assert isinstance(backend, fused_cpu.FusedCpuBackend)
    assert backend.recompute is (chunk is not None)


def test_compile_kernels_on_cpu_without_a_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(fused_cpu, "build_problem", lambda: "no C++ compiler 'c++'")
    with pytest.raises(RuntimeError, match="no C.. compiler.*compile_kernels: false"):
        selection.select_backend(CPU, None, True)


def test_compiled_blocks_on_accelerators_say_once_they_are_unmeasured(caplog):
    selection._warn_unmeasured.cache_clear()
    with caplog.at_level(logging.WARNING):
        first = selection.select_backend(CUDA, None, True)
        second = selection.select_backend(CUDA, 128, True)
    assert first.ops is block_ops.compiled_ops() and second.recompute
    assert caplog.text.count("not yet measured on a GPU") == 1
