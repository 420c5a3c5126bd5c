"""Model analysis shared by tools/analyze_model.py and tools/benchmark.py: parameter counts,
FLOPs (fvcore, attention included) and inference timing with peak memory."""
from __future__ import annotations

import resource
import tempfile
import time
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from detectron2.config import instantiate
from omegaconf import DictConfig
from PIL import Image
from torch import nn


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for aten::scaled_dot_product_attention: QK^T and AV, one multiply-add = 1 flop."""
    from fvcore.nn.jit_handles import get_shape

    q, k, v = (get_shape(x) for x in inputs[:3])
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * q[-1] + batch * q[-2] * k[-2] * v[-1]


def _native_mha_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore handle for aten::_native_multi_head_attention (nn.MultiheadAttention's inference fast
    path, taken by batch-first CLIP blocks in eval): q/k/v in-projections, QK^T and AV, out-projection."""
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    batch, length, embed = prod(q[:-2]), q[-2], q[-1]
    source = k[-2]
    projections = batch * (length + 2 * source) * embed * embed + batch * length * embed * embed
    return projections + 2 * batch * length * source * embed


def count_flops(model: nn.Module, inputs: list[dict[str, Any]]) -> tuple[int, dict[str, int]]:
    """Total FLOPs of one eval forward (fvcore convention: a fused multiply-add is one flop) and the
    per-operator breakdown. Unsupported ops are reported by fvcore's warnings."""
    from detectron2.utils.analysis import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle("aten::scaled_dot_product_attention", _sdpa_flop_jit)
    analysis.set_op_handle("aten::_native_multi_head_attention", _native_mha_flop_jit)
    analysis.unsupported_ops_warnings(False)
    # The CLIP runner computes open_clip blocks from their parameters (`clip_block_sdpa`), so their
    # attention / MLP submodules are never called; their FLOPs are counted by operator all the same.
    analysis.uncalled_modules_warnings(False)
    return analysis.total(), dict(analysis.by_operator())


def synthetic_record(cfg: DictConfig, height: int, width: int, seed: int = 0) -> dict[str, Any]:
    """A random RGB image of the given size, passed through the config's test mapper (so the
    benchmark measures exactly the evaluation path, resizing included)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mapper = instantiate(cfg.dataloader.test.mapper)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.png"
        Image.fromarray(image).save(path)
        return mapper({"file_name": str(path)})


def synthetic_vocabulary(num_classes: int) -> list[str]:
    return [f"object number {i}" for i in range(num_classes)]


@dataclass
class BenchmarkResult:
    seconds_per_image: float
    seconds_std: float
    peak_memory_mb: float
    memory_kind: str
    runs: int


def benchmark_inference(
    model: nn.Module,
    record: dict[str, Any],
    vocabulary: Sequence[str],
    *,
    warmup: int = 2,
    runs: int = 5,
    autocast_dtype: torch.dtype | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Seconds per image (mean/std over `runs`, after `warmup`) of `model([record])` in eval mode
    with `vocabulary` (text encoded once, as in evaluation), and peak memory: CUDA allocator peak
    on GPU, the process's peak resident set size on CPU. `progress` gets a line per forward (a large
    model on CPU takes minutes per image; the first forward also encodes the vocabulary)."""
    report = progress or (lambda message: None)
    model.eval()
    model.set_vocabulary(list(vocabulary))
    device = next(model.parameters()).device
    on_cuda = device.type == "cuda"

    def run() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            model([record])
        if on_cuda:
            torch.cuda.synchronize(device)

    def timed() -> float:
        start = time.perf_counter()
        run()
        return time.perf_counter() - start

    encoding = " (with the vocabulary's text encoding)"
    for i in range(warmup):
        seconds = timed()
        report(f"warm-up {i + 1}/{warmup}: {seconds:.2f} s" + (encoding if i == 0 else ""))
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(runs):
        times.append(timed())
        report(f"run {i + 1}/{runs}: {times[-1]:.2f} s" + (encoding if i == warmup == 0 else ""))
    if on_cuda:
        peak, kind = torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    else:
        peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_peak_rss"
    return BenchmarkResult(float(np.mean(times)), float(np.std(times)), peak, kind, runs)
