#!/usr/bin/env python
"""Throughput and memory of the streaming image-text loader (`build_image_text_train_loader`) on
generated webdataset shards: for each size, tiny JPEG-caption pairs are written to a temporary folder
and one pass over them is timed in a fresh process, which reports images/s and its peak RSS (its
DataLoader workers' peak too). Peak RSS must not grow with the number of pairs.

  python tools/benchmark_image_text.py                          # 10k and 100k pairs, 32 px, 0 workers
  python tools/benchmark_image_text.py --pairs 10000 --workers 2 --image-size 64

A benchmark, not a test: numbers depend on the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--image-size", type=int, default=32, help="side of the generated JPEGs and of the crops")
    parser.add_argument("--shard-size", type=int, default=1000, help="pairs per shard")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--shuffle-buffer", type=int, default=1000)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # internal: time one pass over these shards
    return parser.parse_args()


def write_pairs(folder: Path, num_pairs: int, image_size: int, shard_size: int) -> None:
    """`num_pairs` (JPEG, caption) samples in img2dataset's layout; 1,000 distinct noise images are
    cycled (decoding cost is what matters, not their content)."""
    import webdataset as wds

    from ovseg_d2.data.toy.generate import encode_jpeg

    rng = np.random.default_rng(0)
    images = [encode_jpeg(rng.integers(0, 256, (image_size, image_size, 3), dtype=np.uint8)) for _ in range(1000)]
    with wds.ShardWriter(str(folder / "pairs-%06d.tar"), maxcount=shard_size, verbose=0) as sink:
        for i in range(num_pairs):
            sink.write({"__key__": f"{i:09d}", "jpg": images[i % len(images)], "txt": f"a photo number {i}".encode()})


def peak_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def measure(shards: Path, args: argparse.Namespace) -> dict[str, float]:
    """One pass of the training loader (non-resampled, so every pair is read once)."""
    from ovseg_d2.data.image_text import ImageTextMapper, build_image_text_train_loader

    loader = build_image_text_train_loader(
        shards=str(shards.resolve()),
        mapper=ImageTextMapper(args.image_size, is_train=True),
        total_batch_size=args.batch_size,
        shuffle_buffer=args.shuffle_buffer,
        resampled=False,
        num_workers=args.workers,
        seed=0,
    )
    rss_before = peak_rss_mib(resource.RUSAGE_SELF)  # imports (torch, detectron2, ...) included
    start, images = time.perf_counter(), 0
    for batch in loader:
        images += len(batch)
    seconds = time.perf_counter() - start
    result = {
        "images": images,
        "seconds": round(seconds, 2),
        "images_per_s": round(images / seconds, 1),
        "peak_rss_mib_before_loading": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(resource.RUSAGE_SELF), 1),
    }
    if args.workers > 0:  # the largest finished child: a DataLoader worker
        result["peak_rss_mib_worker"] = round(peak_rss_mib(resource.RUSAGE_CHILDREN), 1)
    return result


def main() -> None:
    args = parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args)))
        return
    results = []
    for num_pairs in args.pairs:
        with tempfile.TemporaryDirectory(prefix="image_text_bench_") as tmp:
            start = time.perf_counter()
            write_pairs(Path(tmp), num_pairs, args.image_size, args.shard_size)
            generate_s = time.perf_counter() - start
            size_mib = sum(p.stat().st_size for p in Path(tmp).glob("*.tar")) / 2**20
            child = [sys.executable, __file__, "--measure", tmp, *sys.argv[1:]]
            stdout = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        result = {"pairs": num_pairs, "shards_mib": round(size_mib, 1), "generate_s": round(generate_s, 1)}
        result.update(json.loads(stdout.splitlines()[-1]))
        results.append(result)
        print(json.dumps(result), flush=True)
    print(f"\n{'pairs':>8} {'shards MiB':>11} {'images/s':>9} {'peak RSS MiB':>13} {'worker MiB':>11}")
    for r in results:
        worker = r.get("peak_rss_mib_worker", "-")
        print(f"{r['pairs']:>8} {r['shards_mib']:>11} {r['images_per_s']:>9} {r['peak_rss_mib']:>13} {worker:>11}")


if __name__ == "__main__":
    main()
