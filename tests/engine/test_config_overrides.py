"""Start-up checks of tools/train_net.py: config overrides must name existing keys, flags may follow
the overrides, and every dataset name must be registered before anything trains or evaluates."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from detectron2.engine import default_argument_parser

import ovseg_d2.data  # noqa: F401  (registers the datasets)
from ovseg_d2.engine import load_config
from ovseg_d2.engine.config import check_dataset_names, parse_args_anywhere

REPO = Path(__file__).resolve().parents[2]
BASELINE = str(REPO / "configs" / "toy" / "dense_baseline.py")


def _train_net(args: list[str], env_root: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "DETECTRON2_DATASETS": str(env_root), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "train_net.py"), "--config-file", BASELINE, *args],
        env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
    )


# ----------------------------------------------------------------------------- overrides


def test_misspelt_override_is_rejected_with_suggestion() -> None:
    # Observed: `train.max_iterr=5` was accepted and training ran the default 200 iterations.
    with pytest.raises(KeyError, match=r"no key 'train.max_iterr'.*did you mean train\.max_iter\b"):
        load_config(BASELINE, ["train.max_iterr=5"])
    with pytest.raises(KeyError, match=r"did you mean train\.max_iter\b"):
        load_config(BASELINE, ["trian.max_iter=5"])  # a misspelt parent too


def test_lazycall_parameters_left_at_their_default_are_overridable() -> None:
    # `head_channels` is a DenseCLIPBaseline argument the config does not set.
    cfg = load_config(BASELINE, ["model.head_channels=8"])
    assert cfg.model.head_channels == 8
    with pytest.raises(KeyError, match=r"did you mean model\.head_channels"):
        load_config(BASELINE, ["model.head_chanels=8"])


def test_new_keys_only_with_plus() -> None:
    cfg = load_config(BASELINE, ["+train.note=hello", "++train.other=1", "++train.max_iter=7"])
    assert (cfg.train.note, cfg.train.other, cfg.train.max_iter) == ("hello", 1, 7)
    with pytest.raises(KeyError, match=r"already exists.*drop the '\+'"):
        load_config(BASELINE, ["+train.max_iter=5"])


def test_unparsable_override_names_itself() -> None:
    with pytest.raises(ValueError, match="--resume"):
        load_config(BASELINE, ["train.max_iter=5", "--resume"])


def test_flags_are_accepted_after_the_overrides() -> None:
    # Observed: `--resume` placed after the overrides ended up among them (a parser exception).
    parser = default_argument_parser()
    args = parse_args_anywhere(
        parser, ["--config-file", "c.py", "train.max_iter=5", "--resume", "--num-gpus", "2", "train.device=cpu"]
    )
    assert args.resume and args.num_gpus == 2 and args.config_file == "c.py"
    assert args.opts == ["train.max_iter=5", "train.device=cpu"]
    args = parse_args_anywhere(parser, ["train.max_iter=5", "--dist-url=tcp://127.0.0.1:1234", "--eval-only"])
    assert args.eval_only and args.dist_url == "tcp://127.0.0.1:1234" and args.opts == ["train.max_iter=5"]
    with pytest.raises(SystemExit):
        parse_args_anywhere(parser, ["train.max_iter=5", "--resme"])  # unknown flags stay errors


# ----------------------------------------------------------------------------- dataset names


def test_unregistered_dataset_names_are_listed_with_close_matches() -> None:
    cfg = load_config(BASELINE, [
        "dataloader.test_datasets=[ovseg_voc20_val,ovseg_voc20_vall,toy_vla]",
        "dataloader.train.dataset_names=[ovseg_voc20_trian]",
    ])
    with pytest.raises(KeyError) as error:
        check_dataset_names(cfg)
    message = error.value.args[0]
    assert "dataloader.test_datasets: 'ovseg_voc20_vall' (close: ovseg_voc20_val" in message
    assert "'toy_vla' (close: toy_val" in message
    assert "dataloader.train.dataset_names: 'ovseg_voc20_trian' (close: ovseg_voc20_train" in message
    assert "'ovseg_voc20_val'" not in message  # registered names are not reported
    check_dataset_names(load_config(BASELINE, ["dataloader.test_datasets=[ovseg_voc20_val]"]))


@pytest.mark.timeout(300)
def test_train_net_fails_at_start_up(voc_root: Path, tmp_path: Path, tiny_baseline_overrides: list[str]) -> None:
    """Observed: an unknown test dataset was found only when evaluation reached it, after a whole
    training run. Now tools/train_net.py stops before training (a flag after the overrides is fine)."""
    start = time.time()
    proc = _train_net(
        tiny_baseline_overrides
        + [f"train.output_dir={tmp_path}", "train.max_iter=100000", "train.eval_period=100000",
           "dataloader.test_datasets=[ovseg_voc20_val,ovseg_voc20_vall]", "--num-gpus", "1"],
        voc_root,
    )
    assert proc.returncode != 0, proc.stdout
    assert "'ovseg_voc20_vall' (close: ovseg_voc20_val" in proc.stdout, proc.stdout
    assert "Starting training" not in proc.stdout and not (tmp_path / "metrics.json").exists()
    assert time.time() - start < 120
