"""OVSegmentor's data side: caption entities, masked questions / answers, the cross-image lists tool
and the class-list pairing hook of the image-text loader."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ovseg_d2.data.image_text import (
    ClassListPairing,
    EntityQuestionMapper,
    EntityVocabulary,
    ImageTextMapper,
    JsonLinesIndex,
    masked_question,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cc4m() -> EntityVocabulary:
    return EntityVocabulary.load()


def test_bundled_vocabulary_is_the_official_one(cc4m: EntityVocabulary) -> None:
    assert len(cc4m.classes) == 73 and cc4m.classes[:3] == ("people", "car", "bus")
    assert cc4m.class_index["donut"] == 72  # the order fixes class_label.json's indices


@pytest.mark.parametrize(
    "caption, entities",
    [
        ("A man riding a motorbike on the street.", ["people", "motorcycle"]),
        ("Two dogs playing with a ball on the grass.", ["dog", "ball"]),
        ("The bus, the sofa and my dog's bowl", ["bus", "sofa", "dog", "bowl"]),
        ("Children near buses; knives and a T-shirt!", ["people", "bus", "knife", "shirt"]),
        ("a couch and a desk next to the TV", ["sofa", "table", "tv"]),
        ("sunset over the sea", []),
    ],
)
def test_entities_are_unique_classes_in_caption_order(cc4m: EntityVocabulary, caption: str, entities: list[str]) -> None:
    assert cc4m.entities(caption) == entities


def test_masked_question_and_answer(cc4m: EntityVocabulary) -> None:
    rng = np.random.default_rng(0)
    question, answer, entities = masked_question("The bus, and two dogs' toys near a dog.", cc4m, rng,
                                                 templates=["a bad photo of a {}."])
    assert question == "The [MASK], and two [MASK]' toys near a [MASK]."
    assert answer == "a bad photo of a bus and dog" and entities == ["bus", "dog"]


def test_official_word_strip_switch(cc4m: EntityVocabulary) -> None:
    """The official cleaning strips 's' and apostrophes from word ends: "bus" and "sofa" are never
    masked, "street." becomes "treet."."""
    rng = np.random.default_rng(0)
    question, answer, _ = masked_question("A bus and a sofa near dogs on the street.", cc4m, rng,
                                          templates=["a photo of {}."], official_word_strip=True)
    assert question == "A bu and a ofa near [MASK] on the treet."
    assert answer == "a photo of dog"


def _write_world(root: Path) -> Path:
    captions = ["a dog on a sofa", "two dogs and a cat", "a cat on the table", "sunset over the sea"]
    (root / "images").mkdir(parents=True)
    lines = []
    for i, caption in enumerate(captions):
        Image.new("RGB", (8, 8), (i * 60, 0, 0)).save(root / "images" / f"{i}.jpg")
        lines.append(json.dumps({"filename": f"images/{i}.jpg", "caption": caption}))
    meta = root / "meta.jsonl"
    meta.write_text("\n".join(lines) + "\n")
    return meta


def test_cross_image_lists_tool_and_pairing(tmp_path: Path, cc4m: EntityVocabulary) -> None:
    meta = _write_world(tmp_path)
    spec = importlib.util.spec_from_file_location("_build_cross_image_lists", REPO / "tools" / "build_cross_image_lists.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--meta-file", str(meta), "--output-dir", str(tmp_path / "lists")]) == 0
    class_label = json.loads((tmp_path / "lists/class_label.json").read_text())
    sample_list = json.loads((tmp_path / "lists/sample_list.json").read_text())
    dog, cat = str(cc4m.class_index["dog"]), str(cc4m.class_index["cat"])
    assert class_label == {"0.jpg": dog, "1.jpg": dog, "2.jpg": cat}  # the first entity; "sunset" has none
    assert sample_list == {dog: [["images/0.jpg", "a dog on a sofa"], ["images/1.jpg", "two dogs and a cat"]],
                           cat: [["images/2.jpg", "a cat on the table"]]}

    pairing = ClassListPairing(tmp_path / "lists/class_label.json", tmp_path / "lists/sample_list.json")
    index = JsonLinesIndex(meta, image_root=tmp_path)
    rng = np.random.default_rng(0)
    pairs = [pairing(index[2], index, rng) for _ in range(3)]
    assert all(p["entity"] == "cat" and p["file_name"] == str(tmp_path / "images/2.jpg") for p in pairs)
    drawn = {pairing(index[0], index, rng)["file_name"] for _ in range(20)}
    assert drawn == {str(tmp_path / "images/0.jpg"), str(tmp_path / "images/1.jpg")}

    mapper = EntityQuestionMapper(ImageTextMapper(image_size=8, scale=(1.0, 1.0)))
    out = mapper(index[1])
    assert out["question"] == "two [MASK] and a [MASK]" and out["entities"] == ["dog", "cat"]
    assert out["answer"].endswith("dog and cat") and tuple(out["image"].shape) == (3, 8, 8)


def test_missing_lists_name_the_tool(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="build_cross_image_lists.py"):
        ClassListPairing(tmp_path / "class_label.json", tmp_path / "sample_list.json")
