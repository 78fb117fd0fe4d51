"""Settings from the command line, the environment and --config: every value checked, empty means unset.

Through the real command line for the cases of the issue; tests/test_settings.py has the rest in process.
"""

from __future__ import annotations

import pytest
from PIL import Image


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "1.png"
    Image.new("RGB", (32, 32), (120, 80, 40)).save(p)
    return p


@pytest.mark.parametrize("text, fragments", [
    ("device: 7\n", ["device: must be one of auto, cpu, cuda, not an integer 7"]),
    ("tree: [a.yaml, b.yaml]\n", ["tree: must be a string (a question tree file), not a list"]),
    ("batch_size: true\n", ["batch_size: must be an integer, not a boolean True"]),
    ("batch-size: 8\n", ["unknown setting 'batch-size' (did you mean 'batch_size'?)"]),
    ("- tree\n", ["a config file is a mapping of settings, not a list"]),
])
def test_wrong_types_in_config_are_one_line(run_cli, image, tmp_path, text, fragments):
    config = tmp_path / "explain.yaml"
    config.write_text(text)
    # --vlm that cannot load: the config must be refused before anything is loaded
    r = run_cli([image, "--config", config, "--vlm", tmp_path / "no-such-vlm"], timeout=60)
    r.assert_one_line_error(2, str(config), *fragments)


@pytest.mark.parametrize("var, value, fragment", [
    ("EXPLAIN_DEVICE", "gpu", "EXPLAIN_DEVICE: must be one of auto, cpu, cuda, not 'gpu'"),
])
def test_wrong_environment_values_are_one_line(run_cli, image, var, value, fragment):
    r = run_cli([image, "--no-vlm"], env={var: value}, timeout=60)
    r.assert_one_line_error(2, fragment)


def test_empty_environment_variables_and_empty_config_keys_mean_unset(run_cli, image, tmp_path):
    # EXPLAIN_DETECTOR= used to load a "checkpoint" from the current folder
    empty = {f"EXPLAIN_{k}": "" for k in ("DETECTOR", "SR", "MASK", "TREE", "VLM", "DEVICE", "BATCH_SIZE",
                                          "CLASS", "STRATEGY", "QUANTIZE", "MAX_STEPS", "INDEX_FROM")}
    config = tmp_path / "explain.yaml"
    config.write_text("device: cpu\nbatch_size: 4\ndetector:\nsr: ''\nclass: cat\n")
    r = run_cli([image, "--no-vlm", "--json"], env={**empty, "EXPLAIN_CONFIG": str(config)}, cwd=tmp_path, timeout=120)
    assert r.returncode == 0, r
    assert '"verdict": null' in r.stdout  # no classifier: nothing was loaded from ""
    assert "no classifier checkpoint" in r.stdout and "bicubic" in r.stdout


def test_unknown_class_is_refused_before_models_load(run_cli, image, tmp_path):
    r = run_cli([image, "--class", "spaceship", "--vlm", tmp_path / "no-such-vlm"], timeout=60)
    line = r.assert_one_line_error(2, "--class 'spaceship' is not a class of", "cifake.yaml", "airplane")
    assert "no-such-vlm" not in line
    r = run_cli([image, "--class", "dgo", "--no-vlm"], timeout=60)
    r.assert_one_line_error(2, "(did you mean 'dog'?)")
