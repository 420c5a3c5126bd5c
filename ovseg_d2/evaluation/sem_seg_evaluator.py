"""Open-vocabulary semantic-segmentation evaluator, a drop-in for Detectron2's SemSegEvaluator.

Differences from SemSegEvaluator, each needed by a benchmark of the project:
- prompt channels are folded into scored classes (`prompt_to_class`, VOC-20b),
- GT of any bit depth and any K (ADE-847, PC-459) with a clear error on out-of-range labels,
- both metric conventions (`metric_convention`), seen/unseen/hIoU for zero-shot splits,
- no per-image RLE json unless asked (it costs GBs of memory for 847 classes), no Boundary IoU.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, SemSegEvaluator
from detectron2.utils.comm import all_gather, is_main_process, synchronize
from detectron2.utils.file_io import PathManager
from tabulate import tabulate

from ovseg_d2.data.mappers import check_label_size, read_sem_seg

from .fewshot_evaluator import FewShotEvaluator
from .metrics import METRIC_CONVENTIONS, confusion_matrix, summarize

logger = logging.getLogger(__name__)


class OpenVocabSemSegEvaluator(DatasetEvaluator):
    """Confusion-matrix evaluator configured entirely from the dataset's metadata.

    Metadata keys (docs/architecture.md): `stuff_classes` (K scored classes), `ignore_label`,
    optional `prompt_to_class`, `unseen_classes`, `metric_convention` ("detectron2" default or
    "mmseg"; the `metric_convention` argument, a method's choice, overrides it), `background_class`.

    Folding: when the model outputs one channel per prompt (P = len(prompt_to_class)), the predicted
    class is `prompt_to_class[argmax over prompts]`. On VOC-20b (20 VOC prompts + 39 background
    prompts all mapped to class 20) this equals CAT-Seg's VOCbEvaluator, which clamps argmax >= 20
    to 20. Outputs with exactly K channels are taken as already folded. Without `prompt_to_class`,
    a dataset with `background_class` folds any channel >= K into it (the same clamp rule).
    """

    def __init__(
        self,
        dataset_name: str,
        distributed: bool = True,
        output_dir: str | None = None,
        *,
        save_predictions: bool = False,
        metric_convention: str | None = None,
    ) -> None:
        """
        Args:
            dataset_name: a registered semantic-segmentation dataset.
            distributed: gather confusion matrices over all ranks; only rank 0 returns metrics.
            output_dir: where `sem_seg_evaluation.pth` (and predictions json) are written.
            save_predictions: keep per-image RLE predictions and write `sem_seg_predictions.json`
                (SemSegEvaluator's format); off by default because of its memory cost.
            metric_convention: "detectron2" or "mmseg" (framework.md F); None = the dataset's
                `metric_convention` metadata (default "detectron2").
        """
        self._dataset_name = dataset_name
        self._distributed = distributed
        self._output_dir = output_dir
        self._save_predictions = save_predictions

        meta = MetadataCatalog.get(dataset_name)
        self._class_names: list[str] = list(meta.stuff_classes)
        self._num_classes = len(self._class_names)
        self._ignore_label = int(meta.ignore_label)
        self._convention: str = metric_convention or meta.get("metric_convention", "detectron2")
        if self._convention not in METRIC_CONVENTIONS:
            raise ValueError(
                f"Dataset '{dataset_name}': metric_convention must be one of {METRIC_CONVENTIONS}, "
                f"got {self._convention!r}"
            )
        self._unseen: list[int] = sorted(int(c) for c in meta.get("unseen_classes", []) or [])
        self._prompt_to_class: list[int] | None = meta.get("prompt_to_class", None)
        self._background_class: int | None = meta.get("background_class", None)
        self._check_class_indices(self._unseen, "unseen_classes")
        if self._background_class is not None:
            self._check_class_indices([self._background_class], "background_class")
        if self._prompt_to_class is not None:
            self._check_class_indices(self._prompt_to_class, "prompt_to_class")
        c2d = meta.get("stuff_dataset_id_to_contiguous_id", None)
        self._contiguous_id_to_dataset_id = {v: k for k, v in c2d.items()} if c2d else None

        self._input_file_to_gt_file = {
            record["file_name"]: record["sem_seg_file_name"]
            for record in DatasetCatalog.get(dataset_name)
        }
        self.reset()

    def _check_class_indices(self, indices: Sequence[int], key: str) -> None:
        bad = [i for i in indices if not 0 <= int(i) < self._num_classes]
        if bad:
            raise ValueError(
                f"Dataset '{self._dataset_name}': {key} has indices {bad[:5]} outside "
                f"[0, {self._num_classes}) (K = len(stuff_classes))"
            )

    def reset(self) -> None:
        k = self._num_classes + 1
        self._conf_matrix = np.zeros((k, k), dtype=np.int64)
        self._predictions: list[dict[str, Any]] = []

    def _fold_table(self, channels: int, file_name: str) -> list[int] | None:
        """Channel -> scored class, or None when the channels already are the K scored classes."""
        if self._prompt_to_class is not None and channels == len(self._prompt_to_class):
            return self._prompt_to_class
        if channels == self._num_classes:
            return None
        if self._background_class is not None and channels > self._num_classes:
            # No explicit table: every extra prompt is a background proxy (CAT-Seg's clamp rule).
            extra = channels - self._num_classes
            return list(range(self._num_classes)) + [self._background_class] * extra
        expected = f"{self._num_classes}" + (
            f" or {len(self._prompt_to_class)} (prompts)" if self._prompt_to_class else ""
        )
        raise ValueError(
            f"Dataset '{self._dataset_name}': prediction for {file_name} has {channels} channels, "
            f"expected {expected}"
        )

    def _predicted_labels(self, scores: torch.Tensor, file_name: str) -> np.ndarray:
        """Argmax on the scores' own device (cheap on GPU), folded, as int64 numpy."""
        labels = scores.argmax(dim=0)
        table = self._fold_table(scores.shape[0], file_name)
        if table is not None:
            labels = torch.as_tensor(table, dtype=torch.long, device=labels.device)[labels]
        return labels.cpu().numpy().astype(np.int64)

    def _load_gt(self, file_name: str) -> tuple[np.ndarray, str]:
        try:
            gt_file = self._input_file_to_gt_file[file_name]
        except KeyError:
            raise KeyError(
                f"Dataset '{self._dataset_name}' has no ground truth for input {file_name}"
            ) from None
        gt = read_sem_seg(gt_file).astype(np.int64, copy=True)
        ignore = gt == self._ignore_label
        bad = ~ignore & ((gt < 0) | (gt >= self._num_classes))
        if bad.any():
            raise ValueError(
                f"Ground truth {gt_file} of dataset '{self._dataset_name}' has labels "
                f"{np.unique(gt[bad])[:10].tolist()} outside [0, {self._num_classes}) that are not "
                f"the ignore label {self._ignore_label}"
            )
        gt[ignore] = self._num_classes
        return gt, gt_file

    def process(self, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]]) -> None:
        """Accumulate one confusion matrix; `output["sem_seg"]` is (C, H, W) at the GT resolution."""
        for input, output in zip(inputs, outputs):
            file_name = input["file_name"]
            pred = self._predicted_labels(output["sem_seg"], file_name)
            gt, gt_file = self._load_gt(file_name)
            if "height" in input and "width" in input:  # the original image size (data error)
                check_label_size(gt.shape, (input["height"], input["width"]), gt_file, file_name)
            if pred.shape != gt.shape:  # the model's output size (model error)
                raise ValueError(
                    f"Prediction for {file_name} has shape {pred.shape} but its ground truth "
                    f"{gt_file} has shape {gt.shape}"
                )
            self._conf_matrix += confusion_matrix(pred, gt, self._num_classes)
            if self._save_predictions:
                self._predictions.extend(self._encode_json_sem_seg(pred, file_name))

    def evaluate(self) -> dict[str, dict[str, float]]:
        """Metrics in percent as `{"sem_seg": {...}}` on the main process, `{}` elsewhere.

        Writes `sem_seg_evaluation.pth` = {"conf_matrix": (K+1)x(K+1) int64 tensor, "metrics": ...}
        so results can be recomputed under either convention later.
        """
        conf_matrix, predictions = self._conf_matrix, self._predictions
        if self._distributed:
            synchronize()
            conf_matrix = np.sum(all_gather(self._conf_matrix), axis=0)
            if self._save_predictions:
                predictions = list(itertools.chain(*all_gather(self._predictions)))
            if not is_main_process():
                return {}

        res = summarize(
            conf_matrix,
            self._class_names,
            convention=self._convention,
            unseen_classes=self._unseen,
        )
        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "sem_seg_evaluation.pth")
            with PathManager.open(path, "wb") as f:
                torch.save({"conf_matrix": torch.from_numpy(conf_matrix), "metrics": res}, f)
            if self._save_predictions:
                path = os.path.join(self._output_dir, "sem_seg_predictions.json")
                with PathManager.open(path, "w") as f:
                    json.dump(predictions, f)
        self._log_table(res)
        return OrderedDict({"sem_seg": res})

    def _log_table(self, res: dict[str, float]) -> None:
        unseen = set(self._unseen)
        rows = [
            (i, name, self._split_mark(i, unseen), res[f"IoU-{name}"], res[f"ACC-{name}"])
            for i, name in enumerate(self._class_names)
        ]
        table = tabulate(
            rows, headers=["id", "class", "split", "IoU", "ACC"], tablefmt="pipe", floatfmt=".2f"
        )
        summary = {k: round(v, 2) for k, v in res.items() if "-" not in k or k.startswith("mIoU-")}
        logger.info(
            f"Semantic segmentation on '{self._dataset_name}' ({self._convention} convention):\n"
            f"{table}\n{summary}"
        )

    def _split_mark(self, index: int, unseen: set[int]) -> str:
        mark = "unseen" if index in unseen else "seen"
        return mark + " (background)" if index == self._background_class else mark

    def _encode_json_sem_seg(self, sem_seg: np.ndarray, file_name: str) -> list[dict[str, Any]]:
        """COCO-stuff style RLE per predicted class, as SemSegEvaluator.encode_json_sem_seg."""
        import pycocotools.mask as mask_util

        records = []
        for label in np.unique(sem_seg):
            label = int(label)
            if self._contiguous_id_to_dataset_id is not None:
                category_id = self._contiguous_id_to_dataset_id[label]
            else:
                category_id = label
            mask = np.asfortranarray((sem_seg == label)[:, :, None].astype(np.uint8))
            rle = mask_util.encode(mask)[0]
            rle["counts"] = rle["counts"].decode("utf-8")
            records.append(
                {"file_name": file_name, "category_id": category_id, "segmentation": rle}
            )
        return records


def build_evaluator(
    dataset_name: str,
    output_dir: str | None = None,
    *,
    distributed: bool = True,
    metric_convention: str | None = None,
    fewshot_void_in_union: bool = False,
    fewshot_paper_oracle: bool = False,
) -> DatasetEvaluator:
    """Evaluator for a dataset from its `evaluator_type`: "ovseg_sem_seg" ->
    OpenVocabSemSegEvaluator, "ovseg_fewshot" (PASCAL-5i / COCO-20i folds) -> FewShotEvaluator,
    "sem_seg" (Detectron2 builtins) -> SemSegEvaluator.

    The options are a method's evaluation choices, passed by `do_test` from the config's
    `dataloader.evaluator`: `metric_convention` ("detectron2" / "mmseg", None = the dataset's)
    for semantic segmentation; `fewshot_void_in_union` (SAZS's count) and `fewshot_paper_oracle`
    (SAZS's ground-truth selection of eigen-segments, see `FewShotEvaluator`) for few-shot folds.
    """
    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
    if evaluator_type == "ovseg_sem_seg":
        return OpenVocabSemSegEvaluator(
            dataset_name, distributed=distributed, output_dir=output_dir,
            metric_convention=metric_convention,
        )
    if evaluator_type == "ovseg_fewshot":
        if metric_convention is not None:
            logger.info(
                f"metric_convention={metric_convention!r} does not apply to the few-shot dataset "
                f"'{dataset_name}' (mIoU / FB-IoU have one definition)"
            )
        return FewShotEvaluator(
            dataset_name, distributed=distributed, output_dir=output_dir,
            void_in_union=fewshot_void_in_union, paper_oracle=fewshot_paper_oracle,
        )
    if evaluator_type == "sem_seg":
        if metric_convention not in (None, "detectron2"):
            raise ValueError(
                f"Dataset '{dataset_name}' uses Detectron2's SemSegEvaluator, which only has the "
                f"'detectron2' metric convention, not {metric_convention!r}"
            )
        return SemSegEvaluator(dataset_name, distributed=distributed, output_dir=output_dir)
    raise NotImplementedError(
        f"No evaluator for dataset '{dataset_name}' with evaluator_type {evaluator_type!r} "
        "(supported: 'ovseg_sem_seg', 'ovseg_fewshot', 'sem_seg')"
    )
