# SAZS at tiny width (the golden-fixture sizes: ViT embed 64, 4 heads, 12 blocks, 32-d embeddings; text tower
# width 32) for tests and quick runs; crops of 64, test resize 32. Same code path as the ViT-L configs.
from detectron2.config import LazyCall as L

from ovseg_d2.inference import InferencePolicy
from ovseg_d2.projects.sazs import DPTPixelEmbedder, build_text_tower

from .sazs_vitl16_384_pascal5i import dataloader, lr_multiplier, model, optimizer, train

model.pixel_embedder = L(DPTPixelEmbedder)(embed_dim=64, num_heads=4, tap_block=11, img_size=384, out_channels=32)
model.text_tower = L(build_text_tower)(clip_model="tiny-sazs-text", weights=None)
model.inference = L(InferencePolicy)(resize="squash", size=(32, 32))
dataloader.train.mapper.augmentations.crop_size = 64
dataloader.train.total_batch_size = 2
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0
dataloader.test_datasets = [f"ovseg_pascal5i_fold{f}_val" for f in range(4)] + [f"ovseg_coco20i_fold{f}_val" for f in range(4)]
model.vocabulary_overrides = {f"ovseg_coco20i_fold{f}_val": "langseg_fewshot_coco80" for f in range(4)}
lr_multiplier.epochs = 2
train.max_iter = 4
train.eval_period = 0
train.best_metric = None
train.checkpointer = dict(period=100, max_to_keep=1)
train.log_period = 1
train.output_dir = "./output/sazs/tiny"
