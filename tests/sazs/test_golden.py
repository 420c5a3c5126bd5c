"""Parity with the official SAZS code (tests/fixtures/golden/sazs/README.md; tolerances of its section 4)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from .conftest import converted, tiny_drn_sazs, tiny_vit_sazs


def assert_close(ours: torch.Tensor, official: torch.Tensor, what: str) -> None:
    """README: max abs(a - b) <= 1e-5 * max abs(b) + 1e-6."""
    ours, official = ours.detach().float(), official.float()
    assert ours.shape == official.shape, f"{what}: shape {tuple(ours.shape)} vs {tuple(official.shape)}"
    diff = (ours - official).abs().max().item()
    assert diff <= 1e-5 * official.abs().max().item() + 1e-6, f"{what}: max |diff| {diff}"


def assert_rel(ours: float, official: float, rel: float, what: str) -> None:
    assert abs(ours - official) <= rel * abs(official), f"{what}: {ours} vs {official}"


def model_input(model, image_hwc: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Official test input: normalise at the original size, then (optionally) bilinear resize."""
    x = model.normalize(image_hwc.permute(2, 0, 1).float().unsqueeze(0))
    return x if size is None else F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@pytest.fixture(scope="module")
def vit(cases):
    model = tiny_vit_sazs(train_class_names=cases["meta"]["labels"], void_as_background=True)
    model.load_state_dict(converted("official_tiny.pth"), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def drn(cases):
    model = tiny_drn_sazs(train_class_names=cases["meta"]["labels"])
    model.load_state_dict(converted("official_tiny_drn.pth"), strict=True)
    return model.eval()


def test_text_prompts_match_official(vit, cases):
    a, table = cases["a_test_episode"], cases["meta"]["text_all_classes"]
    assert torch.equal(vit.text_tower.tokenize(a["prompts"]).long(), a["tokens"].long())
    with torch.no_grad():
        assert_close(vit.text(vit.episode_vocabulary(a["class_name"])), a["text_embeddings"], "episode text")
        all_classes = torch.stack([vit.text(vit.episode_vocabulary(n)) for n in cases["meta"]["labels"]])
    assert_close(all_classes, table["embeddings"], "text of all 20 classes")


def test_input_normalisation(vit, cases):
    a = cases["a_test_episode"]
    x = model_input(vit, a["image_uint8_hwc"], None).double()
    assert_rel(x.sum().item(), a["normalized_input_sum"], 1e-6, "normalised sum")
    assert_rel((x**2).sum().item(), a["normalized_input_sumsq"], 1e-6, "normalised sum of squares")
    assert_close(x[0, :, :8, :8], a["normalized_input_crop_y0_x0_8"], "normalised crop")
    y = model_input(vit, a["image_uint8_hwc"], (512, 512))
    assert_close(y[0, :, 100:116, 200:216], a["model_input_crop_y100_x200_16"], "resized crop")
    assert_close(y[0].mean(dim=2), a["model_input_rowmean"], "resized row means")


def test_vit_forward_matches_official(vit, cases):
    a = cases["a_test_episode"]
    x = model_input(vit, a["image_uint8_hwc"], (512, 512))
    with torch.no_grad():
        assert_close(vit.pixel_embedder.tokens(x), a["tap_block11_tokens"], "block-11 tokens")
        features, edge = vit.pixel_embedder(x)
        text = vit.text(vit.episode_vocabulary(a["class_name"])).unsqueeze(0)
    assert_close(features, a["features"], "features")
    assert_close(edge, a["edge_logits"], "edge logits")
    assert_close(torch.einsum("bchw,bkc->bkhw", features, text), a["scores"], "scores")
    assert_close(vit.log_probs(features, text), a["log_probs"], "log-probs")


def test_vit_episode_prediction_through_the_test_pipeline(vit, cases):
    """Model forward on a few-shot record (resize 512 in the inference policy, bilinear upsampling): the
    prediction equals the official one except where the official margin is below 1e-3 (PIL vs torch)."""
    a = cases["a_test_episode"]
    vit.set_vocabulary(cases["meta"]["labels"])
    record = {"image": a["image_uint8_hwc"].permute(2, 0, 1), "height": 224, "width": 288, "class_id": 0, "file_name": "ep0.jpg"}
    with torch.no_grad():
        scores = vit([record])[0]["sem_seg"]
    assert scores.shape == (2, 224, 288)
    pred = (scores[1] > scores[0]).to(torch.uint8)
    official = a["upsampled_log_probs"][0]
    near_tie = (official[1] - official[0]).abs() < 1e-3
    assert int(near_tie.sum()) == a["n_near_tie_1e-3"]
    assert torch.equal(pred[~near_tie], a["pred"][~near_tie])
    assert (scores - official).abs().max().item() < 1e-3


def test_paper_oracle_selection_and_fold_metrics(cases):
    from ovseg_d2.evaluation import select_by_ground_truth, summarize_fewshot

    for case in (cases["b_oracle"], cases["d_drn"]["pascal_drn_original_resolution"]):
        inter_sum, union_sum = np.zeros((2, 20), np.int64), np.zeros((2, 20), np.int64)
        model_inter, model_union = np.zeros((2, 20), np.int64), np.zeros((2, 20), np.int64)
        for ep, image_ep in zip(case["episodes"], cases["b_oracle"]["episodes"]):
            label = image_ep["label_uint8"].numpy().astype(np.int64)
            gt = np.where(label == 255, 255, (label == ep["class_id"] + 1).astype(np.int64))
            pred = ep["pred"].numpy().astype(np.int64)
            eig = (image_ep["eig_masks_uint8"].numpy() == 255).astype(np.int64)
            inter, union, kept = select_by_ground_truth(pred, eig, gt, 255, void_in_union=True)
            assert kept == ep["kept_index"], ep["name"]
            np.testing.assert_array_equal(inter, ep["kept_inter"].numpy())
            np.testing.assert_array_equal(union, ep["kept_union"].numpy())
            np.testing.assert_array_equal(inter, ep["area_inter"][kept].numpy())
            inter_sum[:, ep["class_id"]] += inter
            union_sum[:, ep["class_id"]] += union
            model_inter[:, ep["class_id"]] += ep["area_inter"][0].numpy().astype(np.int64)
            model_union[:, ep["class_id"]] += ep["area_union"][0].numpy().astype(np.int64)
        names = cases["meta"]["labels"]
        for (i, u), key in (((inter_sum, union_sum), "fold_metrics_oracle"), ((model_inter, model_union), "fold_metrics_model_only")):
            official = case[key]
            np.testing.assert_array_equal(i, official["intersection_buf"].numpy())
            np.testing.assert_array_equal(u, official["union_buf"].numpy())
            res = summarize_fewshot(i, u, cases["meta"]["fold_class_ids"], names)
            assert_rel(res["mIoU"], official["miou"], 1e-6, key)
            assert_rel(res["FB-IoU"], official["fb_iou"], 1e-6, key)


def test_oracle_candidate_counts_match_official(cases):
    from ovseg_d2.evaluation import fewshot_areas

    for ep in cases["b_oracle"]["episodes"]:
        label = ep["label_uint8"].numpy().astype(np.int64)
        gt = np.where(label == 255, 255, (label == ep["class_id"] + 1).astype(np.int64))
        masks = [ep["pred"].numpy().astype(np.int64), *(ep["eig_masks_uint8"].numpy() == 255).astype(np.int64)]
        for k, mask in enumerate(masks):
            inter, union = fewshot_areas(mask, gt, 255, void_in_union=True)
            np.testing.assert_array_equal(inter, ep["area_inter"][k].numpy())
            np.testing.assert_array_equal(union, ep["area_union"][k].numpy())


def test_training_targets_losses_and_gradients(vit, cases):
    from ovseg_d2.projects.sazs import boundary_map, downsample_nearest, edge_attention_loss, edge_bce_loss, seg_nll_loss

    c = cases["c_train_step"]
    labels = c["labels_uint8"].numpy()
    edges = np.stack([boundary_map(lab, range(20)) for lab in labels])
    np.testing.assert_array_equal(edges, c["edge_gts_full"].numpy())
    binary = torch.stack([torch.from_numpy(lab.astype(np.int64) == cid + 1).long() for lab, cid in zip(labels, c["class_ids"])])
    seg = downsample_nearest(binary)
    edge = downsample_nearest(torch.from_numpy(edges)).unsqueeze(1).float()
    assert torch.equal(seg, c["seg_target_small"])
    assert torch.equal(edge, c["edge_target_small"])

    model = vit.train()
    try:
        model.zero_grad()
        x = model.normalize(c["images_uint8_bhwc"].permute(0, 3, 1, 2).float())
        features, edge_logits = model.pixel_embedder(x)
        text = model.episode_text(c["class_names"])
        assert_close(text, c["text_embeddings"], "batch text")
        log_probs = model.log_probs(features, text)
        assert_close(edge_logits, c["edge_logits"], "train edge logits")
        assert_close(log_probs, c["log_probs"], "train log-probs")
        terms = {
            "seg_nll": seg_nll_loss(log_probs, seg),
            "edge_bce": edge_bce_loss(edge_logits, edge),
            "edge_att": edge_attention_loss(log_probs, seg, edge_logits),
        }
        for name, value in terms.items():
            assert_rel(value.item(), c["loss_terms"][name], 1e-5, name)
        w = c["loss_weights"]
        total = sum(w[k] * v for k, v in terms.items())
        # The official total adds the constant, zero-gradient InverseForm term, which is left out here.
        assert_rel(total.item() + c["loss_terms_weighted"]["inverseform"], c["loss_total"], 1e-5, "total")
        total.backward()
        params = dict(model.named_parameters())
        ours = {
            "edgeocr_cls_head.weight": params["pixel_embedder.edge_head.weight"].grad,
            "edgeocr_cls_head.bias": params["pixel_embedder.edge_head.bias"].grad,
            "pretrained.act_postprocess2.4.bias": params["pixel_embedder.up.bias"].grad,
            "pretrained.model.cls_token": params["pixel_embedder.vit.visual.cls_token"].grad,
        }
        for name, grad in ours.items():
            official = c["grads"][name]
            diff = (grad.reshape(official.shape) - official).abs().max().item()
            assert diff <= 1e-4 * official.abs().max().item() + 1e-7, f"grad {name}: {diff}"
        total_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in params.values() if p.grad is not None)).item()
        assert_rel(total_norm, c["grad_total_norm"], 1e-4, "gradient norm")
        with_grad = sum(p.numel() for p in params.values() if p.grad is not None)
        assert with_grad == c["n_params_with_grad"]
    finally:
        model.zero_grad()
        model.eval()


def test_drn_forward_matches_official(drn, cases):
    d = cases["d_drn"]
    a = cases["a_test_episode"]
    text = None
    for key, size in (("pascal_drn_original_resolution", None), ("coco_drn_resize512", (512, 512))):
        x = model_input(drn, a["image_uint8_hwc"], size)
        with torch.no_grad():
            features, edge = drn.pixel_embedder(x)
            text = drn.text(drn.episode_vocabulary(a["class_name"])).unsqueeze(0)
        out = d[key]
        if "features" in out:
            assert_close(features, out["features"], f"{key} features")
        assert_close(edge, out["edge_logits"], f"{key} edge logits")
        assert_close(torch.einsum("bchw,bkc->bkhw", features, text), out["scores"], f"{key} scores")
        assert_close(drn.log_probs(features, text), out["log_probs"], f"{key} log-probs")


def test_converter_rejects_incomplete_and_unknown(cases, tmp_path):
    from ovseg_d2.checkpoint import convert_checkpoint
    from .conftest import GOLDEN

    state = torch.load(GOLDEN / "official_tiny.pth", weights_only=True)["state_dict"]
    with pytest.raises(ValueError, match="clip-weights"):
        convert_checkpoint("sazs", {"state_dict": state})
    broken = {k: v for k, v in state.items() if k != "pretrained.act_postprocess2.3.weight"}
    with pytest.raises(Exception, match="act_postprocess2.3.weight"):
        convert_checkpoint("sazs", {"state_dict": broken}, clip_weights=GOLDEN / "clip_tiny_text.pth")
    prefixed = {"module." + k: v for k, v in state.items()}
    out = convert_checkpoint("sazs", {"state_dict": prefixed}, clip_weights=GOLDEN / "clip_tiny_text.pth")
    assert "pixel_embedder.vit.visual.blocks.11.attn.qkv.weight" in out
    assert not any(".blocks.12." in k for k in out)
