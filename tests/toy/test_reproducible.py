"""`make demo` is reproducible: two short runs of every demo stage (toy world, tiny CLIP pretraining
and its retrieval report, the dense baseline, CAT-Seg training and evaluation) in fresh folders give
identical files, weights and numbers, whatever the load of the machine between them.

Both runs use the same number of intra-op threads, as tools/run_demo.py pins it (`--threads`): float
sums are split across threads, so 1 and 2 threads give different weights after a few iterations.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from ovseg_d2.clip import build_clip, get_tokenizer
from ovseg_d2.data.toy import ToyWorldConfig, ToyWorldLayout, generate_toy_world, register_toy_world
from ovseg_d2.data.toy.demo import evaluate_baseline, train_and_evaluate_catseg
from ovseg_d2.data.toy.retrieval import evaluate_retrieval
from ovseg_d2.engine import do_train, load_config
from ovseg_d2.modeling.contrastive_clip import export_clip_checkpoint

REPO = Path(__file__).resolve().parents[2]
CLIP_CONFIG = REPO / "configs/toy/tiny_clip.json"
WORLD = ToyWorldConfig(num_train=8, num_val=3, num_retrieval=30, image_size=96, seed=5, shard_size=10)
CLIP_ITERS, CATSEG_ITERS = 3, 2


def _file_digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }


def _run_demo_stages(output: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """The stages of tools/run_demo.py, shortened (the pretraining in-process, as
    tools/pretrain_toy_clip.py runs it through tools/train_net.py)."""
    world = output / "toy_world"
    generate_toy_world(world, WORLD, progress=False)
    cfg = load_config(str(REPO / "configs/toy/clip_pretrain.py"), [
        f"dataloader.train.shards={ToyWorldLayout(world).shard_dir}", "dataloader.train.total_batch_size=8",
        "dataloader.train.shuffle_buffer=20", f"train.max_iter={CLIP_ITERS}", "train.device=cpu",
        f"train.output_dir={output / 'clip_pretrain'}",
    ])
    do_train(cfg)
    weights = export_clip_checkpoint(output / "clip_pretrain" / "model_final.pth", output / "tiny_clip.pt")
    retrieval = evaluate_retrieval(
        build_clip(CLIP_CONFIG, weights=weights), get_tokenizer(CLIP_CONFIG), world, progress=False
    )
    monkeypatch.setenv("DETECTRON2_DATASETS", str(output))  # as tools/run_demo.py does
    register_toy_world()
    baseline = evaluate_baseline(str(weights), output / "baseline")
    _, catseg = train_and_evaluate_catseg(str(weights), output / "catseg", CATSEG_ITERS)
    return {
        "world": _file_digests(world),
        "clip": torch.load(weights, weights_only=True)["state_dict"],
        "catseg": torch.load(output / "catseg" / "model_final.pth", weights_only=False)["model"],
        "numbers": {"retrieval": retrieval, "baseline": baseline, "catseg": catseg},
    }


def test_two_runs_give_identical_weights_and_numbers(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # pinned, as tools/run_demo.py --threads does
    runs = []
    try:
        for index in range(2):
            with pytest.MonkeyPatch.context() as mp:
                runs.append(_run_demo_stages(tmp_path / f"run{index}", mp))
    finally:
        torch.set_num_threads(threads)
        register_toy_world()
    first, second = runs
    assert first["world"] == second["world"]
    for stage in ("clip", "catseg"):
        assert first[stage].keys() == second[stage].keys()
        different = [k for k, v in first[stage].items() if not torch.equal(v, second[stage][k])]
        assert not different, f"{stage}: {len(different)} tensors differ, e.g. {different[:3]}"
    assert first["numbers"] == second["numbers"]
