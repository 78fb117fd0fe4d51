"""explainer.settings in process: every value checked whatever its source; empty means unset."""

from __future__ import annotations

import argparse

import pytest

from explainer import settings
from explainer.errors import UsageError


def _args(**given):
    ns = argparse.Namespace(config=None)
    for name in settings.SETTINGS:
        setattr(ns, name, None)
    for k, v in given.items():
        setattr(ns, k, v)
    return ns


@pytest.mark.parametrize("text, message", [
    ("batch_size: '64x'\n", "batch_size: must be an integer, not '64x'"),
    ("max_steps: 0\n", "max_steps: must be at least 1, not 0"),
    ("batch_size: 100000\n", "batch_size: must be at most 4,096, not 100,000"),
    ("strategy: direkt\n", "strategy: must be one of tree, direct, not 'direkt' (did you mean 'direct'?)"),
    ("vlm:\n  id: x\n", "vlm: must be a string (a Hugging Face id or a folder), not a mapping"),
    ("quantize: 4\n", "quantize: must be one of 4bit, 8bit, not an integer 4"),
    ("packing: tight\n", "packing: must be one of rows, exact, not 'tight'"),
    ("clas: cat\n", "unknown setting 'clas' (did you mean 'class'?)"),
    ("1: x\n", "unknown setting 1"),
    ("device: [\n", "cannot read config"),
])
def test_config_values_are_checked(tmp_path, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(UsageError) as exc:
        settings.read_config(str(config))
    assert message in str(exc.value) and str(config) in str(exc.value)


def test_precedence_and_empty_means_unset(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("device: cpu\nbatch_size: 8\nvlm: from-file\ndetector:\nclass: cat\n")
    env = {"EXPLAIN_CONFIG": str(config), "EXPLAIN_BATCH_SIZE": "16", "EXPLAIN_VLM": "", "EXPLAIN_DETECTOR": " ",
           "EXPLAIN_CLASS": "dog"}
    args = _args(device="cuda")
    settings.resolve(args, env)
    assert args.device == "cuda"  # the command line wins
    assert args.batch_size == 16  # then the environment
    assert args.vlm == "from-file"  # an empty variable does not hide the file
    assert args.detector is None  # empty in both: unset, never ""
    assert args.obj == "dog" and args.index_from == "name" and args.max_steps == 2000


def test_command_line_values_are_checked_too():
    with pytest.raises(UsageError, match=r"--batch-size: must be at least 1, not 0"):
        settings.resolve(_args(batch_size=0), {})
    with pytest.raises(UsageError, match="EXPLAIN_MAX_STEPS: must be an integer"):
        settings.resolve(_args(), {"EXPLAIN_MAX_STEPS": "1e3"})


def test_packing_from_the_environment_and_the_file(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("packing: exact\n")
    args = _args()
    settings.resolve(args, {"EXPLAIN_CONFIG": str(config)})
    assert args.packing == "exact"
    args = _args()
    settings.resolve(args, {"EXPLAIN_CONFIG": str(config), "EXPLAIN_PACKING": "rows"})
    assert args.packing == "rows"
    args = _args()
    settings.resolve(args, {})
    assert args.packing == "rows"  # the default
