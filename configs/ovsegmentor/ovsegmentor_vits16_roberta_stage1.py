# OVSegmentor ViT-S/16 (DINO) + RoBERTa-base, stage 1 (README row 2; the official repository has no
# training entry for its tokenizer, spec 3): same recipe as the ViT-B/BERT model. The text side is
# wider (768 > 384), so the entity head works at 384 with a Linear on the text states.
from .ovsegmentor_vitb16_bert_stage1 import dataloader, lr_multiplier, model, optimizer, train

model.image_encoder.embed_dim = 384
model.image_encoder.num_heads = 6
model.image_weights = "pretrained/dino_deitsmall16_pretrain.pth"
model.text_model = "pretrained/roberta-base"
model.tokenizer = "pretrained/roberta-base"
dataloader.train.mapper.mask_token = "<mask>"
train.output_dir = "./output/ovsegmentor/vits16_roberta_stage1"
