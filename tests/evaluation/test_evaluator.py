"""OpenVocabSemSegEvaluator against an independent per-class NumPy reference and Detectron2."""

from __future__ import annotations

import json
import math
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import SemSegEvaluator
from PIL import Image

from ovseg_d2.engine import shutdown_distributed
from ovseg_d2.evaluation import OpenVocabSemSegEvaluator, build_evaluator

# ----------------------------------------------------------------------------- helpers


def reference_metrics(preds, gts, num_classes, ignore, convention, unseen=()):
    """Metrics straight from the definitions: per-class TP/FP/FN counted class by class."""
    tp = np.zeros(num_classes)
    fp = np.zeros(num_classes)
    fn = np.zeros(num_classes)
    for pred, gt in zip(preds, gts):
        keep = gt != ignore
        p, g = pred[keep], gt[keep]
        for c in range(num_classes):
            tp[c] += np.sum((p == c) & (g == c))
            fp[c] += np.sum((p == c) & (g != c))
            fn[c] += np.sum((p != c) & (g == c))
    iou, acc = [], []
    for c in range(num_classes):
        n_gt, union = tp[c] + fn[c], tp[c] + fp[c] + fn[c]
        has_iou = n_gt > 0 if convention == "detectron2" else union > 0
        iou.append(tp[c] / union if has_iou else math.nan)
        acc.append(tp[c] / n_gt if n_gt > 0 else math.nan)
    total = (tp + fn).sum()
    valid = [c for c in range(num_classes) if not math.isnan(iou[c])]
    res = {
        "mIoU": 100 * np.mean([iou[c] for c in valid]),
        "fwIoU": 100 * sum(iou[c] * (tp[c] + fn[c]) / total for c in valid),
        "mACC": 100 * np.mean([a for a in acc if not math.isnan(a)]),
        "pACC": 100 * tp.sum() / total,
        "iou": [100 * v for v in iou],
        "acc": [100 * v for v in acc],
    }
    if unseen:
        seen_iou = [iou[c] for c in valid if c not in unseen]
        unseen_iou = [iou[c] for c in valid if c in unseen]
        s, u = 100 * np.mean(seen_iou), 100 * np.mean(unseen_iou)
        res.update({"mIoU-seen": s, "mIoU-unseen": u, "hIoU": 2 * s * u / (s + u)})
    return res


def make_case(rng, num_images, num_classes, size, ignore, gt_classes=None, channels=None):
    """Random GT over `gt_classes` (some classes never occur) with ~10% ignore pixels, and scores
    whose argmax agrees with the GT on ~60% of pixels, so IoUs are neither 0 nor 1."""
    gt_classes = np.arange(num_classes) if gt_classes is None else np.asarray(gt_classes)
    channels = channels or num_classes
    gts, scores = [], []
    for i in range(num_images):
        h, w = size[0] + i, size[1] - i  # differing sizes
        gt = rng.choice(gt_classes, size=(h, w))
        s = rng.random((channels, h, w)).astype(np.float32)
        agree = rng.random((h, w)) < 0.6
        yy, xx = np.nonzero(agree)
        s[gt[yy, xx] % channels, yy, xx] += 1.0
        gt[rng.random((h, w)) < 0.1] = ignore
        gts.append(gt)
        scores.append(torch.from_numpy(s))
    return gts, scores


@pytest.fixture
def register(tmp_path):
    """Register throwaway datasets with GT files under tmp_path; removed after the test."""
    names = []

    def _register(gts, *, ext="png", dtype=np.uint8, **meta):
        name = f"_test_ovseg_eval_{uuid.uuid4().hex[:8]}"
        records = write_gt(tmp_path / name, gts, ext, dtype)
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(evaluator_type="ovseg_sem_seg", **meta)
        names.append(name)
        return name, records

    yield _register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def write_gt(folder: Path, gts, ext, dtype):
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i, gt in enumerate(gts):
        path = folder / f"{i:04d}.{ext}"
        Image.fromarray(gt.astype(dtype)).save(path)
        records.append({"file_name": f"{folder}/img_{i}.jpg", "sem_seg_file_name": str(path)})
    return records


def run(evaluator, records, scores):
    evaluator.reset()
    for record, s in zip(records, scores):
        evaluator.process([record], [{"sem_seg": s}])
    return evaluator.evaluate()["sem_seg"]


def assert_matches(res, ref, class_names):
    for key in ("mIoU", "fwIoU", "mACC", "pACC", "mIoU-seen", "mIoU-unseen", "hIoU"):
        if key in ref:
            assert res[key] == pytest.approx(ref[key], abs=1e-9), key
    np.testing.assert_allclose([res[f"IoU-{n}"] for n in class_names], ref["iou"], atol=1e-9)
    np.testing.assert_allclose([res[f"ACC-{n}"] for n in class_names], ref["acc"], atol=1e-9)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("convention", ["detectron2", "mmseg"])
def test_matches_reference_8bit(register, convention):
    rng = np.random.default_rng(0)
    k = 12
    gts, scores = make_case(rng, 3, k, (24, 30), 255, gt_classes=range(9))
    names = [f"c{i}" for i in range(k)]
    name, records = register(
        gts, stuff_classes=names, ignore_label=255, metric_convention=convention
    )
    res = run(OpenVocabSemSegEvaluator(name, distributed=False), records, scores)
    preds = [s.argmax(0).numpy() for s in scores]
    ref = reference_metrics(preds, gts, k, 255, convention)
    assert_matches(res, ref, names)


def test_conventions_differ_only_on_absent_classes(register):
    rng = np.random.default_rng(1)
    gts, scores = make_case(rng, 2, 6, (16, 16), 255, gt_classes=range(4))
    names = [f"c{i}" for i in range(6)]
    results = {}
    for convention in ("detectron2", "mmseg"):
        name, records = register(
            gts, stuff_classes=names, ignore_label=255, metric_convention=convention
        )
        results[convention] = run(
            OpenVocabSemSegEvaluator(name, distributed=False), records, scores
        )
    d2, mm = results["detectron2"], results["mmseg"]
    assert math.isnan(d2["IoU-c5"]) and mm["IoU-c5"] == 0.0  # predicted, never in GT
    assert mm["mIoU"] < d2["mIoU"]
    assert (d2["pACC"], d2["mACC"], d2["fwIoU"]) == (mm["pACC"], mm["mACC"], mm["fwIoU"])


@pytest.mark.parametrize("convention", ["detectron2", "mmseg"])
def test_many_classes_16bit_seen_unseen(register, tmp_path, convention):
    rng = np.random.default_rng(2)
    k = 300
    gts, scores = make_case(rng, 3, k, (40, 48), 65535, gt_classes=range(0, 290))
    unseen = list(range(250, 300))
    names = [f"class_{i}" for i in range(k)]
    name, records = register(
        gts,
        ext="tif",
        dtype=np.uint16,
        stuff_classes=names,
        ignore_label=65535,
        unseen_classes=unseen,
        metric_convention=convention,
    )
    assert np.array_equal(np.array(Image.open(records[0]["sem_seg_file_name"])), gts[0])
    out = tmp_path / "out"
    res = run(
        OpenVocabSemSegEvaluator(name, distributed=False, output_dir=str(out)), records, scores
    )
    preds = [s.argmax(0).numpy() for s in scores]
    ref = reference_metrics(preds, gts, k, 65535, convention, unseen=set(unseen))
    assert_matches(res, ref, names)
    saved = torch.load(out / "sem_seg_evaluation.pth", weights_only=False)
    assert (
        saved["conf_matrix"].shape == (k + 1, k + 1) and saved["conf_matrix"].dtype == torch.int64
    )
    assert saved["metrics"]["mIoU"] == res["mIoU"]


@pytest.mark.parametrize("explicit_table", [True, False])
def test_voc20b_folding(register, explicit_table):
    """59 prompt channels -> 21 classes; reference = CAT-Seg's clamp of argmax >= 20 to 20."""
    rng = np.random.default_rng(3)
    names = [f"voc{i}" for i in range(20)] + ["background"]
    gts, scores = make_case(rng, 3, 21, (20, 26), 255, channels=59)
    meta = {"prompt_to_class": list(range(20)) + [20] * 39} if explicit_table else {}
    name, records = register(
        gts, stuff_classes=names, ignore_label=255, background_class=20, **meta
    )
    res = run(OpenVocabSemSegEvaluator(name, distributed=False), records, scores)
    preds = [np.minimum(s.argmax(0).numpy(), 20) for s in scores]
    assert_matches(res, reference_metrics(preds, gts, 21, 255, "detectron2"), names)


def test_equals_detectron2_semseg_evaluator(register):
    rng = np.random.default_rng(4)
    k = 10
    gts, scores = make_case(rng, 3, k, (30, 34), 255, gt_classes=range(8))
    names = [f"c{i}" for i in range(k)]
    name, records = register(gts, stuff_classes=names, ignore_label=255)
    ours = run(OpenVocabSemSegEvaluator(name, distributed=False), records, scores)
    theirs = run(SemSegEvaluator(name, distributed=False), records, scores)
    for key in ["mIoU", "fwIoU", "mACC", "pACC"] + [f"IoU-{n}" for n in names]:
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-12, err_msg=key)


def test_out_of_range_gt_names_file(register):
    gt = np.zeros((8, 8), dtype=np.int64)
    gt[0, 0] = 7
    name, records = register([gt], stuff_classes=["a", "b"], ignore_label=255)
    evaluator = OpenVocabSemSegEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match=records[0]["sem_seg_file_name"]):
        evaluator.process([records[0]], [{"sem_seg": torch.zeros(2, 8, 8)}])


def test_build_evaluator(register):
    name, _ = register([np.zeros((4, 4))], stuff_classes=["a"], ignore_label=255)
    assert isinstance(build_evaluator(name), OpenVocabSemSegEvaluator)
    d2_name = f"_test_ovseg_eval_d2_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(d2_name, lambda: [])
    MetadataCatalog.get(d2_name).set(
        stuff_classes=["a"], ignore_label=255, evaluator_type="sem_seg"
    )
    try:
        evaluator = build_evaluator(d2_name)
        assert type(evaluator) is SemSegEvaluator
        with pytest.raises(ValueError, match="only has the 'detectron2' metric convention"):
            build_evaluator(d2_name, metric_convention="mmseg")
    finally:
        DatasetCatalog.remove(d2_name)
        MetadataCatalog.remove(d2_name)


def _distributed_worker(rank, world_size, init_file, name, records, meta, scores, result_file):
    """One rank: join a gloo group, register the dataset in this process, evaluate its share."""
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=120),  # fail instead of hanging if a rank dies
    )
    try:
        DatasetCatalog.register(name, lambda: records)
        MetadataCatalog.get(name).set(**meta)
        evaluator = OpenVocabSemSegEvaluator(name, distributed=True)
        evaluator.reset()
        for record, s in list(zip(records, scores))[rank::world_size]:
            evaluator.process([record], [{"sem_seg": s}])
        result = evaluator.evaluate()
        if rank == 0:
            torch.save(result, result_file)
        else:
            assert result == {}
    finally:
        shutdown_distributed()


@pytest.mark.timeout(300)
def test_distributed_equals_single_process(register, tmp_path):
    rng = np.random.default_rng(5)
    k = 7
    gts, scores = make_case(rng, 4, k, (16, 20), 255, gt_classes=range(6))
    meta = dict(stuff_classes=[f"c{i}" for i in range(k)], ignore_label=255, unseen_classes=[5, 6])
    name, records = register(gts, **meta)
    single = run(OpenVocabSemSegEvaluator(name, distributed=False), records, scores)

    result_file = tmp_path / "rank0.pth"
    mp.spawn(
        _distributed_worker,
        args=(2, tmp_path / "dist_init", name, records, meta, scores, result_file),
        nprocs=2,
    )
    distributed = torch.load(result_file, weights_only=False)["sem_seg"]
    assert distributed.keys() == single.keys()
    for key in single:
        np.testing.assert_equal(distributed[key], single[key], err_msg=key)


def test_save_predictions_writes_rle_json(register, tmp_path):
    rng = np.random.default_rng(6)
    gts, scores = make_case(rng, 2, 4, (12, 12), 255)
    name, records = register(gts, stuff_classes=list("abcd"), ignore_label=255)
    default = OpenVocabSemSegEvaluator(name, distributed=False)
    run(default, records, scores)
    assert default._predictions == []  # nothing kept unless asked

    out = tmp_path / "pred"
    run(OpenVocabSemSegEvaluator(name, False, str(out), save_predictions=True), records, scores)
    predictions = json.loads((out / "sem_seg_predictions.json").read_text())
    expected = sum(len(np.unique(s.argmax(0).numpy())) for s in scores)
    assert len(predictions) == expected
    assert {p["file_name"] for p in predictions} == {r["file_name"] for r in records}


# ----------------------------------------------------------------------------- per-config convention


class _FixedPredictions(torch.nn.Module):
    """A "model" returning stored scores for each input file (inference_on_dataset needs a Module)."""

    def __init__(self, scores: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.scores = scores

    def forward(self, batched_inputs):
        return [{"sem_seg": self.scores[x["file_name"]]} for x in batched_inputs]


@pytest.mark.parametrize(
    "options,expected_miou",
    [
        (None, 75.0),  # the dataset's own convention (detectron2)
        ({"metric_convention": "mmseg"}, 50.0),
        ({"metric_convention": "detectron2"}, 75.0),
    ],
)
def test_config_chooses_metric_convention(register, tmp_path, options, expected_miou):
    """`dataloader.evaluator.metric_convention` (a method's reporting rule) overrides the dataset's.
    GT [[0, 0], [1, 1]], prediction [[0, 2], [1, 1]]: IoU(0) = 1/2, IoU(1) = 1, class 2 predicted
    but absent: left out (detectron2, mIoU 75) or counted as 0 (mmseg, mIoU 50)."""
    from detectron2.config import LazyCall as L
    from omegaconf import OmegaConf

    from ovseg_d2.data.mappers import SemSegDatasetMapper, build_sem_seg_test_loader
    from ovseg_d2.engine.train_loop import do_test

    gt = np.array([[0, 0], [1, 1]])
    name, records = register([gt], stuff_classes=["a", "b", "c"], ignore_label=255,
                             metric_convention="detectron2")
    image = Path(records[0]["file_name"])
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(image)
    pred = torch.nn.functional.one_hot(torch.tensor([[0, 2], [1, 1]]), 3).permute(2, 0, 1)
    cfg = OmegaConf.create({
        "dataloader": {
            "test": L(build_sem_seg_test_loader)(
                dataset_name=None, mapper=L(SemSegDatasetMapper)(is_train=False, augmentations=[])
            ),
            "test_datasets": [name],
        },
        "train": {"output_dir": str(tmp_path / "out")},
    })
    if options is not None:
        cfg.dataloader.evaluator = options
    results = do_test(cfg, _FixedPredictions({str(image): pred.float()}))
    assert results[name]["sem_seg"]["mIoU"] == pytest.approx(expected_miou)
