"""The shipped tiny-CLIP weights (ovseg_d2/data/toy/weights): the compact format round-trips, and
every shipped seed loads with `build_clip` and scores as documented (scores.json, README) on the
default world's retrieval split, through tools/pretrain_toy_clip.py as the demo runs it; and the
script's --pretrain path, which makes them, on a small pretraining world."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ovseg_d2.clip import build_clip, get_tokenizer
from ovseg_d2.data.toy import ToyWorldConfig, ToyWorldLayout, generate_toy_world, read_meta
from ovseg_d2.data.toy.retrieval import class_prompts, evaluate_retrieval
from ovseg_d2.data.toy.shipped_clip import (
    TOKEN_EMBEDDING,
    WEIGHTS_DIR,
    compact_state_dict,
    expand_shipped_weights,
    shipped_weights,
    used_token_ids,
    zero_unused_token_rows,
)
from ovseg_d2.utils.atomic import torch_save_atomic

REPO = Path(__file__).resolve().parents[2]
CLIP_CONFIG = REPO / "configs/toy/tiny_clip.json"
DOCUMENTED: dict[str, dict[str, float]] = json.loads((WEIGHTS_DIR / "scores.json").read_text())
TOLERANCE = 100 / 300  # one of the 300 retrieval images: argmax ties may flip across CPUs / BLAS builds
MAX_FILE_BYTES = 1_500_000


@pytest.fixture(scope="module")
def retrieval_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default world's retrieval split alone (images do not depend on the other splits)."""
    root = tmp_path_factory.mktemp("default_world")
    generate_toy_world(root, ToyWorldConfig(), splits=("retrieval",), progress=False)
    return root


def test_compact_form_round_trips(tmp_path: Path) -> None:
    sd = build_clip(CLIP_CONFIG).state_dict()
    keep = torch.tensor([3, 320, 49406, 49407])
    zeroed = zero_unused_token_rows(sd, keep)
    assert torch.equal(zeroed[TOKEN_EMBEDDING][keep], sd[TOKEN_EMBEDDING][keep])
    assert int(torch.count_nonzero(zeroed[TOKEN_EMBEDDING].abs().sum(1))) == len(keep)
    compact = torch_save_atomic(compact_state_dict(zeroed), tmp_path / "compact.pt")
    clip = build_clip(CLIP_CONFIG, weights=expand_shipped_weights(compact, tmp_path / "clip.pt"))
    for name, value in zeroed.items():
        assert torch.equal(clip.state_dict()[name], value), name


@pytest.mark.parametrize("seed", sorted(DOCUMENTED, key=int))
def test_shipped_seed_scores_as_documented(seed: str, retrieval_world: Path, tmp_path: Path) -> None:
    compact = shipped_weights(int(seed))
    assert compact.stat().st_size <= MAX_FILE_BYTES
    clip = build_clip(CLIP_CONFIG, weights=expand_shipped_weights(compact, tmp_path / "tiny_clip.pt"))
    result = evaluate_retrieval(clip, get_tokenizer(CLIP_CONFIG), retrieval_world, progress=False)
    for key, value in DOCUMENTED[seed].items():
        assert result[key] == pytest.approx(value, abs=TOLERANCE), key


def test_script_uses_shipped_weights_by_default(tmp_path: Path) -> None:
    """The demo's contract: without --pretrain the script expands the seed's shipped file and reports
    its retrieval. A small train split keeps the world quick; the retrieval split is the default one."""
    seed = min(DOCUMENTED, key=int)
    subprocess.run(
        [sys.executable, str(REPO / "tools/pretrain_toy_clip.py"), "--output", str(tmp_path), "--num-train", "4",
         "--clip-seed", seed, "train.max_iter=1"],
        check=True, cwd=REPO, capture_output=True,
    )
    report = json.loads((tmp_path / "retrieval.json").read_text())
    assert report["weights"] == str(tmp_path / "tiny_clip.pt") and report["clip_seed"] == int(seed)
    assert report["source"].startswith("shipped")
    assert set(report["timings"]) == {"generate_s", "pretrain_s", "retrieval_s"}
    for key, value in DOCUMENTED[seed].items():
        assert report["retrieval"][key] == pytest.approx(value, abs=TOLERANCE), key


def test_script_pretrains_on_its_own_pretraining_world(tmp_path: Path) -> None:
    """--pretrain: the trainer reads the shards of OUTPUT/clip_world (--pretrain-images train images,
    train split only) rather than the toy world's, and the export keeps exactly the token rows that
    the pretraining captions and the class prompts use."""
    subprocess.run(
        [sys.executable, str(REPO / "tools/pretrain_toy_clip.py"), "--output", str(tmp_path), "--num-train", "4",
         "--pretrain-images", "12", "--clip-seed", "3", "--pretrain", "train.max_iter=2",
         "dataloader.train.total_batch_size=4", "dataloader.train.shuffle_buffer=8"],
        check=True, cwd=REPO, capture_output=True,
    )
    pretrain_world = ToyWorldLayout(tmp_path / "clip_world")
    assert json.loads(pretrain_world.manifest.read_text())["config"]["num_train"] == 12
    assert len(read_meta(pretrain_world, "train")) == 12 and not pretrain_world.image_dir("val").exists()
    assert f"shards: {pretrain_world.shard_dir}\n" in (tmp_path / "clip_pretrain/config.yaml").read_text()
    report = json.loads((tmp_path / "retrieval.json").read_text())
    assert report["source"] == "pretrained here on 12 images, seed 3" and report["retrieval"]["num_images"] == 300
    # the pretraining world's generation is timed on its own, not as pretraining
    assert set(report["timings"]) == {"generate_s", "generate_pretraining_world_s", "pretrain_s", "retrieval_s"}

    captions = [r["caption"] for r in read_meta(pretrain_world, "train")] + class_prompts()
    rows = torch.load(tmp_path / "tiny_clip.pt", weights_only=True)["state_dict"][TOKEN_EMBEDDING]
    kept = torch.nonzero(rows.abs().sum(1)).flatten()
    assert kept.tolist() == used_token_ids(get_tokenizer(CLIP_CONFIG), captions).tolist()
