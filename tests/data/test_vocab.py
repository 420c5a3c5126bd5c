"""Vocabularies and splits against the lists in shared/specs/framework.md (A.3-A.5)."""
import json

import pytest

from ovseg_d2.data.vocab import (
    VOCABULARIES,
    coco_stuff171_ids,
    display_names,
    fewshot_base_classes,
    fewshot_classes,
    fewshot_novel_classes,
    load_vocabulary,
    seen_classes,
    split_synonyms,
    unseen_classes,
)

COUNTS = {
    "voc20": 20, "voc21": 21, "voc20b": 59, "pc59": 59, "pc60": 60, "pc459": 459, "ade150": 150,
    "ade847": 847, "coco_stuff171": 171, "coco_object81": 81, "cityscapes19": 19,
    "langseg_fewshot_coco80": 80,
}


@pytest.mark.parametrize("name,count", sorted(COUNTS.items()))
def test_counts_and_entries(name, count):
    entries = load_vocabulary(name)
    assert len(entries) == count
    assert all(isinstance(e, str) and e for e in entries)
    assert len(set(entries)) == count


def test_all_vocabularies_listed():
    assert set(VOCABULARIES) == set(COUNTS)


def test_derived_lists():
    voc20, pc59, coco = (load_vocabulary(n) for n in ("voc20", "pc59", "coco_stuff171"))
    assert voc20[0] == "aeroplane" and voc20[-1] == "tvmonitor"
    assert load_vocabulary("voc21") == ["background"] + voc20
    assert load_vocabulary("pc60") == ["background"] + pc59
    assert load_vocabulary("coco_object81") == ["background"] + coco[:80]
    assert coco[79] == "toothbrush" and coco[80] == "banner" and coco[-1] == "wood"
    extras = (
        "bag, bed, bench, book, building, cabinet, ceiling, cloth, computer, cup, door, fence, "
        "floor, flower, food, grass, ground, keyboard, light, mountain, mouse, curtain, "
        "platform, sign, plate, road, rock, shelves, sidewalk, sky, snow, bedclothes, track, "
        "tree, truck, wall, water, window, wood"
    ).split(", ")
    assert load_vocabulary("voc20b") == voc20 + extras
    assert sorted(extras) == sorted(set(pc59) - set(voc20))
    assert load_vocabulary("cityscapes19")[6:8] == ["traffic light", "traffic sign"]


def test_official_catseg_details():
    ade150 = load_vocabulary("ade150")
    assert ade150[7] == "bed "  # CAT-Seg's trailing space is part of the benchmark prompt
    pc459 = load_vocabulary("pc459")
    assert pc459[:3] == ["accordion", "aeroplane", "airconditioner"] and pc459[430] == "unknown"
    ade847 = load_vocabulary("ade847")
    assert ade847[:2] == ["wall", "building, edifice"]
    assert sum(", " in e for e in ade847) == 217


def test_split_synonyms_verbatim():
    assert split_synonyms("person, people, human") == ["person", "people", "human"]
    assert split_synonyms("dog,puppy") == ["dog,puppy"]  # a bare "," does not split
    assert split_synonyms("bed ") == ["bed "]  # kept verbatim: part of the benchmark prompt
    assert split_synonyms("road,  street") == ["road", " street"]


def test_display_names():
    assert display_names(["building, edifice", "bed ", "a,b", "road, route, way"]) == [
        "building", "bed ", "a,b", "road",
    ]
    ade847 = load_vocabulary("ade847")
    assert len(set(display_names(ade847))) == 837  # first synonyms collide ("bag" x3, ...)
    unique = display_names(ade847, unique=True)
    assert len(set(unique)) == 847 and unique[:2] == ["wall", "building"]
    assert "bag, handbag, pocketbook, purse" in unique and unique.count("bag") == 1


def test_load_from_path_and_errors(tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(["cat, kitty", "dog"]))
    assert load_vocabulary(str(path)) == ["cat, kitty", "dog"]
    with pytest.raises(KeyError, match="nope"):
        load_vocabulary("nope")
    path.write_text(json.dumps({"a": 1}))
    with pytest.raises(ValueError):
        load_vocabulary(str(path))


@pytest.mark.parametrize(
    "vocab,n_seen,unseen",
    [
        ("voc20", 15, "pottedplant, sheep, sofa, train, tvmonitor"),
        ("pc59", 49, "aeroplane, bed, bedclothes, boat, bottle, car, cloth, cow, keyboard, plate"),
        ("coco_stuff171", 156, "cow, giraffe, suitcase, frisbee, skateboard, carrot, scissors, "
         "cardboard, clouds, grass, playingfield, river, road, tree, wall-concrete"),
    ],
)
def test_zero_shot_splits(vocab, n_seen, unseen):
    names = load_vocabulary(vocab)
    assert [names[i] for i in unseen_classes(vocab)] == unseen.split(", ")
    assert len(seen_classes(vocab)) == n_seen
    assert sorted(seen_classes(vocab) + unseen_classes(vocab)) == list(range(len(names)))
    with pytest.raises(KeyError):
        unseen_classes("ade150")


PASCAL_FOLDS = [
    "aeroplane, bicycle, bird, boat, bottle", "bus, car, cat, chair, cow",
    "diningtable, dog, horse, motorbike, person", "pottedplant, sheep, sofa, train, tvmonitor",
]
COCO_INTERLEAVED = [
    "person, airplane, boat, parking meter, dog, elephant, backpack, suitcase, sports ball, "
    "skateboard, wine glass, spoon, sandwich, hot dog, chair, dining table, mouse, microwave, "
    "refrigerator, scissors",
    "bicycle, bus, traffic light, bench, horse, bear, umbrella, frisbee, kite, surfboard, cup, "
    "bowl, orange, pizza, couch, toilet, remote, oven, book, teddy bear",
    "car, train, fire hydrant, bird, sheep, zebra, handbag, skis, baseball bat, tennis racket, "
    "fork, banana, broccoli, donut, potted plant, tv, keyboard, toaster, clock, hair drier",
    "motorcycle, truck, stop sign, cat, cow, giraffe, tie, snowboard, baseball glove, bottle, "
    "knife, apple, carrot, cake, bed, laptop, cell phone, sink, vase, toothbrush",
]


@pytest.mark.parametrize("fold", range(4))
def test_fewshot_folds(fold):
    pascal = fewshot_classes("pascal5i")
    novel = fewshot_novel_classes("pascal5i", fold)
    assert [pascal[c] for c in novel] == PASCAL_FOLDS[fold].split(", ")
    coco = fewshot_classes("coco20i")
    assert len(coco) == 80
    novel = fewshot_novel_classes("coco20i", fold)
    assert novel == fewshot_novel_classes("coco20i", fold, "interleaved")
    assert novel == list(range(fold, 80, 4))
    assert [coco[c] for c in novel] == COCO_INTERLEAVED[fold].split(", ")
    contiguous = fewshot_novel_classes("coco20i", fold, "contiguous")
    assert contiguous == list(range(20 * fold, 20 * fold + 20))
    base = fewshot_base_classes("coco20i", fold)
    assert len(base) == 60 and not set(base) & set(novel)
    assert len(fewshot_base_classes("pascal5i", fold)) == 15


def test_fewshot_contiguous_boundaries_and_errors():
    coco = fewshot_classes("coco20i")
    firsts_lasts = [(coco[f[0]], coco[f[-1]]) for f in
                    (fewshot_novel_classes("coco20i", k, "contiguous") for k in range(4))]
    assert firsts_lasts == [("person", "cow"), ("elephant", "bottle"), ("wine glass", "bed"),
                            ("dining table", "toothbrush")]
    with pytest.raises(KeyError):
        fewshot_novel_classes("pascal5i", 0, "interleaved")
    with pytest.raises(IndexError):
        fewshot_novel_classes("coco20i", 4)


def test_coco_stuff_ids():
    ids = coco_stuff171_ids()
    assert len(ids) == 171 and ids == sorted(set(ids))
    assert ids[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13] and ids[79] == 90 and ids[80] == 92
    assert ids[-1] == 182
