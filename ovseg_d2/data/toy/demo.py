"""Stages of the toy-world demo (tools/run_demo.py, `make demo`): baseline evaluation, CAT-Seg
training and evaluation, overlays. Each stage reuses its cached result in its output folder and, once
finished, records in its `run.json` how to rebuild its model (ovseg_d2.engine.run_record).

Demo orchestration, kept next to the toy world it runs on (not imported by `ovseg_d2.data.toy`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog
from omegaconf import DictConfig
from torch import nn

from ovseg_d2.data.mappers import read_image, read_sem_seg
from ovseg_d2.engine import build_model, do_test, do_train, load_config
from ovseg_d2.engine.run_record import RunRecord
from ovseg_d2.utils.repo_paths import REPO_ROOT
from ovseg_d2.utils.visualization import render_segmentation, save_image

BASELINE_CONFIG = REPO_ROOT / "configs/toy/dense_baseline.py"
CATSEG_CONFIG = REPO_ROOT / "configs/catseg/catseg_toy.py"
VAL_DATASET = "toy_val"
METRICS = ("mIoU", "mIoU-seen", "mIoU-unseen", "hIoU", "pACC")


def _metrics(results: dict[str, Any]) -> dict[str, float]:
    sem_seg = results[VAL_DATASET]["sem_seg"]
    return {k: float(sem_seg[k]) for k in METRICS}


def baseline_model_overrides(clip_weights: str) -> list[str]:
    """configs/toy/dense_baseline.py without its head: the training-free MaskCLIP-style baseline."""
    return ["model.head=none", f"model.clip_weights={clip_weights}"]


def baseline_config(clip_weights: str, output_dir: Path) -> DictConfig:
    return load_config(str(BASELINE_CONFIG), baseline_model_overrides(clip_weights) + [
        f"train.output_dir={output_dir}", f"dataloader.test_datasets=[{VAL_DATASET}]",
    ])


def evaluate_baseline(clip_weights: str, output_dir: Path) -> dict[str, float]:
    """The training-free baseline's metrics on toy_val: the floor on unseen classes."""
    cfg = baseline_config(clip_weights, output_dir)
    model = build_model(cfg).eval()
    metrics = _metrics(do_test(cfg, model))
    RunRecord.of(
        "dense CLIP baseline (training-free)", BASELINE_CONFIG, baseline_model_overrides(clip_weights), None, VAL_DATASET
    ).write(output_dir)
    return metrics


def train_and_evaluate_catseg(
    clip_weights: str, output_dir: Path, max_iter: int | None = None
) -> tuple[nn.Module, dict[str, float]]:
    """Train CAT-Seg on `toy_seen_train` (skipped when `model_final.pth` exists), evaluate on toy_val."""
    # Seed 0, as the leaderboard's CAT-Seg row: the config's -1 would draw the seed from NumPy's global
    # state, which depends on every stage that ran before.
    overrides = [f"model.clip_weights={clip_weights}", f"train.output_dir={output_dir}", "train.seed=0"]
    if max_iter is not None:
        overrides.append(f"train.max_iter={max_iter}")
    cfg = load_config(str(CATSEG_CONFIG), overrides)
    final = output_dir / "model_final.pth"
    if final.exists():
        model = build_model(cfg)
        DetectionCheckpointer(model).load(str(final))
    else:
        # Detectron2's EvalHook evaluates after the last iteration whatever eval_period says; the
        # evaluation below is the one reported, so training runs without test datasets.
        model = do_train(load_config(str(CATSEG_CONFIG), overrides + ["dataloader.test_datasets=[]"]))
    model.eval()
    metrics = _metrics(do_test(cfg, model))
    RunRecord.of("CAT-Seg", CATSEG_CONFIG, [f"model.clip_weights={clip_weights}"], final, VAL_DATASET).write(output_dir)
    return model, metrics


@torch.no_grad()
def write_overlays(model: nn.Module, output_dir: Path, count: int) -> list[Path]:
    """image | prediction | ground truth | legend for the first `count` validation images, upscaled
    (the images are 96 px). Background is not a class of the toy benchmark (ignored, as in VOC-20):
    it is left undrawn ("unlabeled") in both panels."""
    meta = MetadataCatalog.get(VAL_DATASET)
    names = list(meta.stuff_classes)
    model.eval()
    model.set_vocabulary(meta.get("prompt_classes", names))
    mapper = instantiate(load_config(str(CATSEG_CONFIG), []).dataloader.test.mapper)
    paths = []
    for record in DatasetCatalog.get(VAL_DATASET)[:count]:
        scores = model([mapper(dict(record))])[0]["sem_seg"]
        image = read_image(record["file_name"], format="RGB")
        gt = read_sem_seg(record["sem_seg_file_name"])
        prediction = scores.argmax(0).cpu().numpy()
        prediction = np.where(gt == meta.ignore_label, meta.ignore_label, prediction)
        mosaic = render_segmentation(image, [prediction, gt], ["CAT-Seg", "truth"], names)
        paths.append(save_image(mosaic, output_dir / f"{Path(record['file_name']).stem}.png"))
    return paths
