"""Few-shot (1-way) evaluator for PASCAL-5i / COCO-20i episodes: mIoU and FB-IoU as HSNet / SAZS."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils.comm import all_gather, is_main_process, synchronize
from detectron2.utils.file_io import PathManager

from ovseg_d2.data.mappers import binary_mask, check_label_size, read_sem_seg

from .metrics import fewshot_areas, select_by_ground_truth, summarize_fewshot

logger = logging.getLogger(__name__)


class FewShotEvaluator(DatasetEvaluator):
    """Scores binary predictions of few-shot records (`class_id`, raw mask `sem_seg_file_name`).

    Model output per record: `{"sem_seg": (2, H, W) scores}` at the original image size, channel 0
    = background (everything but the record's class), channel 1 = the record's class; the argmax is
    the prediction, a tie goes to background. Ground truth = `binary_mask(mask, class_id)`.
    Intersection and union of background and foreground are summed per class over the episodes;
    metrics (`metrics.summarize_fewshot`): per-class foreground IoU, their mean `mIoU` over the
    dataset's `split_classes`, and `FB-IoU`. There is one definition (HSNet's), so the
    Detectron2/mmseg `metric_convention` does not apply; `void_in_union` reproduces SAZS's count.

    `paper_oracle=True` is SAZS's published protocol, not a zero-shot result: outputs also carry
    `"candidates"` (K, H, W) {0, 1} masks (eigen-segments), and per episode the evaluator keeps whichever of
    prediction / candidates has the best foreground IoU against the ground truth
    (`metrics.select_by_ground_truth`). Its metrics are reported as `oracle-mIoU`, `oracle-FB-IoU`, ....
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        void_in_union: bool = False,
        paper_oracle: bool = False,
    ) -> None:
        meta = MetadataCatalog.get(dataset_name)
        for key in ("stuff_classes", "split_classes"):
            if not meta.get(key, None):
                raise ValueError(f"Few-shot dataset '{dataset_name}' has no metadata '{key}'")
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._void_in_union = void_in_union
        self._paper_oracle = paper_oracle
        self._class_names: list[str] = list(meta.stuff_classes)
        self._classes: list[int] = [int(c) for c in meta.split_classes]
        self._ignore_label = int(meta.get("ignore_label", 255))
        self._num_records = len(DatasetCatalog.get(dataset_name))
        self.reset()

    def reset(self) -> None:
        shape = (2, len(self._class_names))  # (background, foreground) x class
        self._inter = np.zeros(shape, dtype=np.int64)
        self._union = np.zeros(shape, dtype=np.int64)
        self._count = 0

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        for input, output in zip(inputs, outputs):
            file_name, gt_file = input["file_name"], input["sem_seg_file_name"]
            class_id = int(input["class_id"])
            scores = output["sem_seg"]
            if scores.dim() != 3 or scores.shape[0] != 2:
                raise ValueError(
                    f"Dataset '{self._dataset_name}': prediction for {file_name} has shape "
                    f"{tuple(scores.shape)}, expected (2, H, W) scores (background, class)"
                )
            mask = read_sem_seg(gt_file)
            if "height" in input and "width" in input:
                check_label_size(mask.shape, (input["height"], input["width"]), gt_file, file_name)
            pred = scores.argmax(dim=0).cpu().numpy()
            if pred.shape != mask.shape:
                raise ValueError(
                    f"Prediction for {file_name} has shape {pred.shape} but its ground truth "
                    f"{gt_file} has shape {mask.shape}"
                )
            gt = binary_mask(mask, class_id, self._ignore_label)
            inter, union = self._episode_areas(pred, gt, output, file_name)
            self._inter[:, class_id] += inter
            self._union[:, class_id] += union
            self._count += 1

    def _episode_areas(
        self, pred: np.ndarray, gt: np.ndarray, output: dict[str, Any], file_name: str
    ) -> tuple[np.ndarray, np.ndarray]:
        candidates = output.get("candidates")
        if not self._paper_oracle:
            if candidates is not None:
                raise ValueError(
                    f"Dataset '{self._dataset_name}': the output for {file_name} carries 'candidates' (a paper-oracle "
                    "model mode) but the evaluator was built without paper_oracle=True"
                )
            return fewshot_areas(pred, gt, self._ignore_label, self._void_in_union)
        if candidates is None:
            raise ValueError(
                f"Dataset '{self._dataset_name}': paper_oracle evaluation needs 'candidates' masks in the output "
                f"for {file_name} (SAZS: model.eval_mode='paper_oracle')"
            )
        candidates = candidates.cpu().numpy().astype(np.int64)
        if candidates.shape[1:] != pred.shape:
            raise ValueError(f"candidates for {file_name} have shape {candidates.shape[1:]}, the prediction {pred.shape}")
        inter, union, _ = select_by_ground_truth(pred, candidates, gt, self._ignore_label, self._void_in_union)
        return inter, union

    def evaluate(self) -> dict[str, dict[str, float]]:
        """`{"sem_seg": {"mIoU", "FB-IoU", "IoU-<class>"...}}` in percent on the main process, `{}`
        elsewhere; writes `fewshot_evaluation.pth` (intersections, unions, metrics). Fails when
        not every record of the dataset was evaluated."""
        inter, union, count = self._inter, self._union, self._count
        if self._distributed:
            synchronize()
            inter = np.sum(all_gather(self._inter), axis=0)
            union = np.sum(all_gather(self._union), axis=0)
            count = sum(all_gather(self._count))
            if not is_main_process():
                return {}
        if count != self._num_records:
            raise RuntimeError(
                f"Few-shot dataset '{self._dataset_name}': {count} of {self._num_records} "
                "episodes were evaluated"
            )
        res = summarize_fewshot(inter, union, self._classes, self._class_names)
        if self._paper_oracle:  # selected with the ground truth: never to be read as a zero-shot number
            res = {f"oracle-{k}": v for k, v in res.items()}
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "fewshot_evaluation.pth")
            with PathManager.open(path, "wb") as f:
                torch.save(
                    {"intersection": torch.from_numpy(inter), "union": torch.from_numpy(union),
                     "classes": self._classes, "metrics": res},
                    f,
                )
        logger.info(
            f"Few-shot segmentation on '{self._dataset_name}' ({count} episodes"
            f"{', void in union' if self._void_in_union else ''}"
            f"{', PAPER-ORACLE: eigen-segments selected with the ground truth' if self._paper_oracle else ''}): "
            f"{ {k: round(v, 2) for k, v in res.items()} }"
        )
        return OrderedDict({"sem_seg": res})
