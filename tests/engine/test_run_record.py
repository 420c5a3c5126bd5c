"""ovseg_d2.engine.run_record: the run.json written by the toy demo and the leaderboard and read by
tools/web_demo.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ovseg_d2.engine.run_record import RunRecord

REPO = Path(__file__).resolve().parents[2]


def test_a_config_inside_the_repository_is_stored_relative_and_read_back_absolute(tmp_path: Path) -> None:
    checkpoint = tmp_path / "model_final.pth"
    record = RunRecord.of("CAT-Seg", REPO / "configs/catseg/catseg_toy.py", ["a=1"], checkpoint, "toy_val")
    path = record.write(tmp_path)
    assert json.loads(path.read_text()) == {
        "name": "CAT-Seg", "config": "configs/catseg/catseg_toy.py", "overrides": ["a=1"],
        "weights": str(checkpoint), "dataset": "toy_val",
    }
    assert RunRecord.read(path) == record


def test_a_config_outside_the_repository_stays_absolute_and_none_weights_are_training_free(tmp_path: Path) -> None:
    config = tmp_path / "my_config.py"
    path = RunRecord.of("baseline", config, [], "none", None).write(tmp_path)
    stored = json.loads(path.read_text())
    assert (stored["config"], stored["weights"]) == (str(config), None)
    assert RunRecord.read(path).weights is None


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not a readable JSON run record"),
        (json.dumps({"name": "x", "config": "c.py"}), "run record without ['overrides', 'weights', 'dataset']"),
        (json.dumps(["a list"]), "run record without"),
        (json.dumps({"name": "x", "config": "c.py", "overrides": "a=1", "weights": None, "dataset": None}),
         "'overrides' must be a list"),
    ],
)
def test_a_malformed_record_is_a_value_error_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "run.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=str(path)) as error:
        RunRecord.read(path)
    assert message in str(error.value)
