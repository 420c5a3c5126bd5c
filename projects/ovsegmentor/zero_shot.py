"""Zero-shot image classification during training (the official loop reports ImageNet top-1/top-5 every
epoch): pooled image feature against prompt-averaged class embeddings of the model's own text tower."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from detectron2.engine import HookBase

from ovseg_d2.clip import get_templates
from ovseg_d2.data.image_text import ImageTextMapper, JsonLinesIndex
from ovseg_d2.data.image_text.sources import resolve_dataset_path
from ovseg_d2.data.vocab import load_vocabulary
from ovseg_d2.engine import unwrap
from ovseg_d2.modeling import HFTextClassifier, Vocabulary

__all__ = ["ZeroShotClassificationHook", "zero_shot_accuracy"]


@torch.no_grad()
def zero_shot_accuracy(model, records: Sequence[dict], vocabulary: Vocabulary, templates: Sequence[str],
                       image_size: int = 224, batch_size: int = 64) -> dict[str, float]:
    """Top-1 / top-5 accuracy (%) of `records` ({"file_name", "label": class index}) with the class
    embeddings of `vocabulary` averaged over `templates` (official 'subset': 7 GroupViT templates)."""
    mapper = ImageTextMapper(image_size, is_train=False)
    classifier = HFTextClassifier(model.text_encoder, model.tokenizer, templates, projector=model.text_projector)
    classes = classifier(vocabulary).to(model.device)
    k = min(5, classes.shape[0])
    hits1 = hits5 = 0
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        images = model.normalize(model.stack_images([mapper(r) for r in chunk]))
        _, image_x, _ = model.encode_image(images)
        top = (F.normalize(image_x, dim=-1) @ classes.T).topk(k, dim=-1).indices.cpu()
        labels = torch.tensor([int(r["label"]) for r in chunk])[:, None]
        hits1 += int((top[:, :1] == labels).sum())
        hits5 += int((top == labels).any(dim=1).sum())
    return {"top1": 100.0 * hits1 / len(records), "top5": 100.0 * hits5 / len(records)}


class ZeroShotClassificationHook(HookBase):
    """Every `period` iterations and after training, on the main process: zero-shot accuracy on a
    JSON-lines meta file ({"filename", "caption", "label"}) whose labels index `class_names` (a
    vocabulary name or JSON file); logged as `zero_shot/<name>/top1|top5`."""

    def __init__(self, meta_file: str, class_names: str, *, name: str = "imagenet", period: int = 0,
                 image_root: str | None = None, templates: str = "groupvit_subset", image_size: int = 224) -> None:
        self.meta_file, self.image_root = resolve_dataset_path(meta_file), image_root
        self.class_names, self.name, self.period = class_names, name, period
        self.templates, self.image_size = get_templates(templates), image_size

    def before_train(self) -> None:
        """Fail at the start, not after the first epoch, when the files are missing."""
        if not Path(self.meta_file).is_file():
            raise FileNotFoundError(
                f"zero-shot classification meta file {self.meta_file} not found (JSON lines "
                '{"filename", "caption", "label"}, e.g. ImageNet val); set train.hooks=[] to train without it'
            )
        load_vocabulary(self.class_names)

    def _evaluate(self) -> None:
        from detectron2.utils import comm

        if not comm.is_main_process():
            return
        model = unwrap(self.trainer.model)
        root = resolve_dataset_path(self.image_root) if self.image_root else None
        records = list(JsonLinesIndex(Path(self.meta_file), root))
        vocabulary = Vocabulary.from_entries(load_vocabulary(self.class_names), source=str(self.class_names))
        was_training = model.training
        model.eval()
        try:
            result = zero_shot_accuracy(model, records, vocabulary, self.templates, self.image_size)
        finally:
            model.train(was_training)
        self.trainer.storage.put_scalars(**{f"zero_shot/{self.name}/{k}": v for k, v in result.items()},
                                         smoothing_hint=False)

    def after_step(self) -> None:
        if self.period and (self.trainer.iter + 1) % self.period == 0 and self.trainer.iter + 1 != self.trainer.max_iter:
            self._evaluate()

    def after_train(self) -> None:
        if self.trainer.iter + 1 >= self.trainer.max_iter:
            self._evaluate()
