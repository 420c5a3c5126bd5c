"""The streaming image-text loader (shard split, resampling, JSON-lines extras and pairing, bad web
data, augmentations) and the shared contrastive pieces (InfoNCE, all-gather with gradient)."""
from __future__ import annotations

import json
import logging
import math
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import webdataset as wds
from timm.data.auto_augment import RandAugment

from ovseg_d2.data.datasets.common import DatasetNotPreparedError
from ovseg_d2.data.image_text import ImageTextMapper, ImageTextStream, JsonLinesIndex, expand_shards
from ovseg_d2.data.toy.generate import encode_jpeg
from ovseg_d2.engine import shutdown_distributed
from ovseg_d2.modeling.contrastive import symmetric_info_nce

SIZE = 8  # pixels of the generated images


def _jpeg(value: int) -> bytes:
    return encode_jpeg(np.full((SIZE, SIZE, 3), value, np.uint8))


def write_shards(folder: Path, num_shards: int, per_shard: int) -> list[str]:
    """`num_shards` tar shards of `per_shard` (jpg, txt) samples; returns all keys."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    with wds.ShardWriter(str(folder / "shard-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(num_shards * per_shard):
            keys.append(f"{i:06d}")
            sink.write({"__key__": keys[-1], "jpg": _jpeg(i % 256), "txt": f"caption {i}".encode()})
    return keys


def stream(shards, **kwargs) -> ImageTextStream:
    kwargs = {"mapper": ImageTextMapper(SIZE, is_train=False), "seed": 0, "rank": 0, "world_size": 1, **kwargs}
    return ImageTextStream(shards=shards, **kwargs)


def test_one_pass_over_2_ranks_x_2_workers_reads_every_sample_exactly_once(tmp_path: Path) -> None:
    keys = write_shards(tmp_path, num_shards=8, per_shard=5)
    seen: dict[int, list[str]] = {}
    for rank in (0, 1):
        ranked = stream(tmp_path, rank=rank, world_size=2, resampled=False, shuffle_buffer=4)
        loader = torch.utils.data.DataLoader(ranked, batch_size=None, num_workers=2)
        seen[rank] = [x["image_id"] for x in loader]
    assert sorted(seen[0] + seen[1]) == keys  # each sample exactly once
    assert len(seen[0]) == len(seen[1]) == 20  # 8 shards over 4 consumers: 2 shards each


def test_shuffle_buffer_permutes_a_pass(tmp_path: Path) -> None:
    keys = write_shards(tmp_path, num_shards=2, per_shard=10)
    assert [x["image_id"] for x in stream(tmp_path, resampled=False, shuffle_buffer=0)] == keys
    shuffled = [x["image_id"] for x in stream(tmp_path, resampled=False, shuffle_buffer=8)]
    assert shuffled != keys and sorted(shuffled) == keys


def test_resampled_stream_is_endless_and_differs_per_rank(tmp_path: Path) -> None:
    write_shards(tmp_path, num_shards=4, per_shard=5)
    first = {}
    for rank in (0, 1):
        it = iter(stream(tmp_path, rank=rank, world_size=2, resampled=True, shuffle_buffer=8))
        first[rank] = [next(it)["image_id"] for _ in range(50)]  # 50 > the 20 samples there are
    assert first[0] != first[1]
    assert len(set(first[0])) > 10  # draws from many shards, not one shard repeated


def test_non_resampled_pass_needs_a_shard_per_consumer(tmp_path: Path) -> None:
    write_shards(tmp_path, num_shards=1, per_shard=3)
    with pytest.raises(ValueError, match="1 shards cannot feed 2 consumers"):
        list(stream(tmp_path, rank=1, world_size=2, resampled=False))


def test_missing_shard_is_named(tmp_path: Path) -> None:
    write_shards(tmp_path, num_shards=2, per_shard=1)
    assert len(expand_shards(str(tmp_path / "shard-{000000..000001}.tar"))) == 2
    with pytest.raises(DatasetNotPreparedError, match="shard-000002.tar"):
        expand_shards(str(tmp_path / "shard-{000000..000002}.tar"))


def test_corrupt_member_is_skipped_with_a_warning_naming_it(tmp_path: Path, caplog) -> None:
    with wds.TarWriter(str(tmp_path / "web-000000.tar")) as sink:
        for key, image in (("good0", _jpeg(10)), ("broken", b"<html>404</html>"), ("good1", _jpeg(20))):
            sink.write({"__key__": key, "jpg": image, "txt": b"a caption"})
        sink.write({"__key__": "textonly", "txt": b"no image here"})
    with caplog.at_level(logging.WARNING):
        out = list(stream(tmp_path, resampled=False, shuffle_buffer=0))
    assert [x["image_id"] for x in out] == ["good0", "good1"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "'broken'" in warnings[0] and "web-000000.tar" in warnings[0]
    assert "'textonly'" in warnings[1] and "no image" in warnings[1]


def test_truncated_shard_is_named_and_the_next_shard_still_read(tmp_path: Path, caplog) -> None:
    write_shards(tmp_path, num_shards=2, per_shard=4)
    cut = tmp_path / "shard-000000.tar"
    cut.write_bytes(cut.read_bytes()[:2500])  # inside the 2nd sample (each member: 512 header + data)
    with caplog.at_level(logging.WARNING):
        ids = [x["image_id"] for x in stream(tmp_path, resampled=False, shuffle_buffer=0)]
    assert ids[-4:] == ["000004", "000005", "000006", "000007"]  # the intact shard, whole
    assert set(ids[:-4]) <= {"000000", "000001"}
    assert any("shard-000000.tar" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_failures_in_a_row_raise(tmp_path: Path) -> None:
    with wds.TarWriter(str(tmp_path / "bad.tar")) as sink:
        for i in range(5):
            sink.write({"__key__": f"k{i}", "jpg": b"garbage", "txt": b"x"})
    with pytest.raises(RuntimeError, match="3 image-text samples failed in a row.*'k2'"):
        list(stream(tmp_path, resampled=False, shuffle_buffer=0, max_consecutive_failures=3))


def _write_meta(tmp_path: Path) -> Path:
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(4):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(_jpeg(40 * i))
        lines.append(json.dumps(
            {"filename": f"img/{i}.jpg", "caption": f"photo {i}", "entity": [f"e{i}"], "pairindex": (i + 1) % 4}
        ))
    meta = tmp_path / "cc4m.jsonl"
    meta.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n")  # line 3 is blank
    return meta


def test_jsonl_extra_fields_and_cross_image_pairing(tmp_path: Path) -> None:
    meta = _write_meta(tmp_path)

    def pair_by_index(record: dict, index: JsonLinesIndex, rng: np.random.Generator) -> dict:
        return index[record["pairindex"]]

    out = list(ImageTextStream(
        mapper=ImageTextMapper(SIZE, is_train=False), meta_file=meta, image_root=tmp_path, pairing=pair_by_index,
        resampled=False, shuffle_buffer=0, seed=0, rank=0, world_size=1,
    ))
    assert [x["caption"] for x in out] == ["photo 0", "photo 1", "photo 2", "photo 3"]
    assert [x["entity"] for x in out] == [["e0"], ["e1"], ["e2"], ["e3"]]
    assert [x["image_id"] for x in out] == ["cc4m/1", "cc4m/2", "cc4m/4", "cc4m/5"]  # line numbers (line 3 blank)
    assert [x["pair"]["caption"] for x in out] == ["photo 1", "photo 2", "photo 3", "photo 0"]
    assert out[0]["pair"]["image"].shape == (3, SIZE, SIZE)
    assert int(out[0]["pair"]["image"].float().mean().round()) == 40  # the pair's own image was mapped


def test_pairing_needs_a_meta_file(tmp_path: Path) -> None:
    write_shards(tmp_path, num_shards=1, per_shard=1)
    with pytest.raises(ValueError, match="random access"):
        stream(tmp_path, pairing=lambda r, i, g: r)


def test_malformed_meta_line_is_named(tmp_path: Path) -> None:
    meta = tmp_path / "m.jsonl"
    meta.write_text('{"filename": "a.jpg", "caption": "x"}\n{"file": "b.jpg", "caption": "y"}\n')
    index = JsonLinesIndex(meta)
    assert index[0]["caption"] == "x"
    with pytest.raises(ValueError, match=r"m.jsonl:2: missing key\(s\) \['filename'\]"):
        index[1]


def test_random_erasing_draws_unit_noise_in_the_normalised_space() -> None:
    mean, std = (100.0, 120.0, 140.0), (50.0, 60.0, 70.0)
    mapper = ImageTextMapper(
        64, scale=(1.0, 1.0), ratio=(1.0, 1.0), random_erasing=1.0, pixel_mean=mean, pixel_std=std
    )
    torch.manual_seed(0)
    image = mapper({"image_bytes": encode_jpeg(np.full((64, 64, 3), 128, np.uint8)), "caption": "grey"})["image"]
    assert image.dtype == torch.float32
    erased = (image != 128).any(dim=0)
    ys, xs = torch.nonzero(erased, as_tuple=True)
    box = erased[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    assert box.all() and erased.sum() < 64 * 64  # one rectangle, not the whole image
    noise = (image - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    noise = noise[:, erased]
    assert abs(noise.mean().item()) < 0.25 and 0.8 < noise.std().item() < 1.2


def test_rand_augment_is_built_from_the_config_string() -> None:
    mapper = ImageTextMapper(32, auto_augment="rand-m9-n3-mstd0.5-inc1")
    (rand_augment,) = [t for t in mapper.transform.transforms if isinstance(t, RandAugment)]
    assert rand_augment.num_layers == 3
    assert {op.magnitude for op in rand_augment.ops} == {9}
    assert {op.hparams["magnitude_std"] for op in rand_augment.ops} == {0.5}
    with pytest.raises(ValueError, match="augmix"):
        ImageTextMapper(32, auto_augment="augmix-m5")


def test_info_nce_on_a_hand_computed_2x2_case() -> None:
    # image rows e1, e2 (the second given unnormalised); text rows e1 and (0.6, 0.8); scale 2:
    # image->text logits [[2, 1.2], [0, 1.6]], text->image logits [[2, 0], [1.2, 1.6]]
    image = torch.tensor([[1.0, 0.0], [0.0, 5.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    expected = 0.25 * (
        math.log(1 + math.exp(-0.8)) + math.log(1 + math.exp(-1.6))  # rows of image->text
        + math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(-0.4))  # rows of text->image
    )
    assert symmetric_info_nce(image, text, 2.0).item() == pytest.approx(expected, rel=1e-6)


def _gloo_rank(rank: int, world: int, init_file: str, image: torch.Tensor, text: torch.Tensor, out: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    try:
        b = len(image) // world
        local_image = image[rank * b:(rank + 1) * b].clone().requires_grad_()
        local_text = text[rank * b:(rank + 1) * b].clone().requires_grad_()
        scale = torch.tensor(3.0, requires_grad=True)
        loss = symmetric_info_nce(local_image, local_text, scale)
        loss.backward()
        torch.save({"loss": loss.detach(), "image": local_image.grad, "text": local_text.grad, "scale": scale.grad},
                   f"{out}.{rank}")
    finally:
        shutdown_distributed()


@pytest.mark.timeout(120)
def test_all_gather_gradient_in_2_gloo_processes_equals_one_process(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    image, text = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    image_1, text_1 = image.clone().requires_grad_(), text.clone().requires_grad_()
    scale_1 = torch.tensor(3.0, requires_grad=True)
    loss_1 = symmetric_info_nce(image_1, text_1, scale_1)
    loss_1.backward()

    out = str(tmp_path / "grads")
    # spawn, not fork: a child forked after this process ran OpenMP work can hang in a parallel op
    mp.start_processes(_gloo_rank, args=(2, str(tmp_path / "init"), image, text, out), nprocs=2, start_method="spawn")
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]
    # the global loss is the mean of the ranks' losses; DDP averages gradients over the 2 ranks, and
    # the gather's backward sums every rank's gradient onto each feature's owner
    assert (ranks[0]["loss"] + ranks[1]["loss"]) / 2 == pytest.approx(loss_1.item(), rel=1e-6)
    torch.testing.assert_close(torch.cat([r["image"] for r in ranks]) / 2, image_1.grad)
    torch.testing.assert_close(torch.cat([r["text"] for r in ranks]) / 2, text_1.grad)
    torch.testing.assert_close((ranks[0]["scale"] + ranks[1]["scale"]) / 2, scale_1.grad)
