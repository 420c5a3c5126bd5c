"""Vocabulary: one value from metadata or user words, synonyms parsed in one place, overrides."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from ovseg_d2.data.vocab import display_names, load_vocabulary, split_synonyms
from ovseg_d2.engine import test_vocabulary as evaluation_vocabulary
from ovseg_d2.modeling import OpenVocabSegmentor, Vocabulary

REPO = Path(__file__).resolve().parents[2]
OVSEG_VOC = {"diningtable": "table", "pottedplant": "plant", "tvmonitor": "monitor"}  # ovsegmentor.md 11.4


def test_from_text_parses_classes_and_synonyms():
    v = Vocabulary.from_text("cat, dog|puppy , a red car")
    assert v.entries == ("cat", "dog, puppy", "a red car")
    assert v.synonyms == (("cat",), ("dog", "puppy"), ("a red car",))
    assert v.class_names == v.prompt_names == ("cat", "dog", "a red car")
    assert v.prompt_to_class == (0, 1, 2) and v.background_class is None and len(v) == 3


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty"),
        ("  ", "empty"),
        ("cat,,dog", "empty class or synonym name in ''"),
        ("cat|, dog", "empty class or synonym name in 'cat\\|'"),
        ("cat, cat", "duplicate class names after synonym parsing: 'cat'"),
        ("cat|kitty, cat", "duplicate class names after synonym parsing: 'cat'"),  # issue 8: two identical classes
        ("cat|kitty, dog|kitty", "'kitty'"),
    ],
)
def test_from_text_rejects_empty_and_duplicate_names(text, message):
    with pytest.raises(ValueError, match=message):
        Vocabulary.from_text(text)


def _demo():
    spec = importlib.util.spec_from_file_location("ovseg_demo_vocab", REPO / "tools" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("words,message", [("", "empty"), ("cat|kitty, cat", "duplicate")])
def test_demo_rejects_empty_or_duplicate_vocabulary(tmp_path, words, message):
    """`--vocabulary ""` used to fall back to the dataset's classes; "cat|kitty, cat" gave two "cat"."""
    argv = [
        "--config-file",
        str(REPO / "configs/toy/dense_baseline.py"),
        "--input",
        str(tmp_path),
        "--vocabulary",
        words,
        "--output",
        str(tmp_path / "out"),
    ]
    with pytest.raises(ValueError, match=message):
        _demo().main(argv)


def test_synonyms_parsed_verbatim_and_consistently():
    entries = ["building, edifice", "bed ", "a,b", "road, route, way"]
    v = Vocabulary.from_entries(entries)
    assert v.synonyms == (("building", "edifice"), ("bed ",), ("a,b",), ("road", "route", "way"))
    assert list(v.prompt_names) == display_names(entries) == [split_synonyms(e)[0] for e in entries]


def test_from_entries_keeps_colliding_first_synonyms_apart():
    ade847 = load_vocabulary("ade847")
    v = Vocabulary.from_entries(ade847)
    assert len(set(v.prompt_names)) == 837 and len(set(v.class_names)) == 847
    with pytest.raises(ValueError, match="duplicate class entries: 'sky'"):
        Vocabulary.from_entries(["sky", "tree", "sky"])
    with pytest.raises(ValueError, match="empty"):
        Vocabulary.from_entries([])


def test_from_metadata_folding_and_background():
    v = Vocabulary.from_metadata("ovseg_voc20b_val")
    assert len(v) == 59 and len(v.class_names) == 21 and v.class_names[20] == "background"
    assert v.prompt_to_class == tuple(range(20)) + (20,) * 39 and v.background_class == 20
    assert v.entries[20] == "bag"
    voc21 = Vocabulary.from_metadata("ovseg_voc21_val")
    assert voc21.background_class == 0 and voc21.entries == voc21.class_names and voc21.entries[0] == "background"
    ade847 = Vocabulary.from_metadata("ovseg_ade847_val")
    assert ade847.entries[1] == "building, edifice" and ade847.class_names[1] == "building"
    with pytest.raises(KeyError, match="did you mean.*ovseg_voc21_val"):
        Vocabulary.from_metadata("ovseg_voc21_vall")


def test_rename_override_changes_prompts_not_metric_names():
    v = Vocabulary.from_metadata("ovseg_voc21_val", OVSEG_VOC)
    base = Vocabulary.from_metadata("ovseg_voc21_val")
    changed = {i: (a, b) for i, (a, b) in enumerate(zip(base.entries, v.entries)) if a != b}
    assert changed == {11: ("diningtable", "table"), 16: ("pottedplant", "plant"), 20: ("tvmonitor", "monitor")}
    assert v.class_names == base.class_names and v.prompt_to_class == base.prompt_to_class
    assert v.background_class == 0


def test_override_errors_name_the_offender(tmp_path):
    with pytest.raises(KeyError, match="cannot rename 'tvmonitr'.*did you mean.*tvmonitor"):
        Vocabulary.from_metadata("ovseg_voc21_val", {"tvmonitr": "monitor"})
    with pytest.raises(KeyError, match="'bag' names 3 prompts"):
        Vocabulary.from_metadata("ovseg_ade847_val", {"bag": "handbag"})
    with pytest.raises(ValueError, match="duplicate class entries: 'dog'"):
        Vocabulary.from_metadata("ovseg_voc21_val", {"cat": "dog"})
    short = tmp_path / "short.json"
    short.write_text(json.dumps(["background", "plane"]))
    with pytest.raises(ValueError, match="2 entries, the vocabulary has 21 prompts"):
        Vocabulary.from_metadata("ovseg_voc21_val", str(short))


def test_list_override_from_a_json_file(tmp_path):
    """TCL-style: the prompts of a dataset replaced by another spelling list, one entry per prompt."""
    names = ["background"] + [n.replace("diningtable", "dining table") for n in load_vocabulary("voc20")]
    path = tmp_path / "mmseg_voc21.json"
    path.write_text(json.dumps(names))
    v = Vocabulary.from_metadata("ovseg_voc21_val", str(path))
    assert v.entries[11] == "dining table" and v.class_names[11] == "diningtable"


def _model(**kwargs) -> OpenVocabSegmentor:
    return OpenVocabSegmentor(pixel_mean=[0.0] * 3, pixel_std=[1.0] * 3, train_class_names=["a", "b"], **kwargs)


def test_model_overrides_drive_the_evaluation_vocabulary():
    model = _model(vocabulary_overrides={"ovseg_voc21_val": OVSEG_VOC}).eval()
    before = model.test_vocabulary
    with evaluation_vocabulary(model, "ovseg_voc21_val"):
        assert model.class_names[11] == "table" and model.vocabulary.class_names[11] == "diningtable"
    assert model.test_vocabulary is before
    with evaluation_vocabulary(model, "ovseg_voc20_val"):  # no override for this one
        assert model.class_names[10] == "diningtable"
    model.train()
    assert model.class_names == ["a", "b"]


def test_model_rejects_bad_overrides_at_construction():
    with pytest.raises(KeyError, match="not registered"):
        _model(vocabulary_overrides={"ovseg_voc21": {}})
    with pytest.raises(KeyError, match="cannot rename 'aeroplan'"):
        _model(vocabulary_overrides={"ovseg_voc21_val": {"aeroplan": "airplane"}})


def test_set_vocabulary_accepts_a_vocabulary_or_entries():
    model = _model().eval()
    model.set_vocabulary(["sky", "tree, bush"])
    assert model.test_vocabulary.synonyms == (("sky",), ("tree", "bush"))
    user = Vocabulary.from_text("cat, dog")
    model.set_vocabulary(user)
    assert model.test_vocabulary is user
    with pytest.raises(ValueError, match="empty"):
        model.set_vocabulary([])


def test_method_configs_forward_overrides():
    """`model.vocabulary_overrides` in a method's LazyConfig reaches the base class (CAT-Seg here)."""
    from ovseg_d2.engine import load_config
    from detectron2.config import instantiate

    cfg = load_config(str(REPO / "configs/catseg/catseg_toy.py"), [])
    cfg.model.vocabulary_overrides = {"ovseg_voc21_val": OVSEG_VOC}
    model = instantiate(cfg.model).eval()
    with evaluation_vocabulary(model, "ovseg_voc21_val"):
        assert model.class_names[11] == "table" and model.vocabulary.class_names[11] == "diningtable"
