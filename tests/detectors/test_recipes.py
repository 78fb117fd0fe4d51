"""Recipes: the shipped ones load and type-check; a user's recipe file is read like every other small input."""

from __future__ import annotations

import os

import pytest

from detectors.recipes import RECIPE_KEYS, load_recipe, recipe_names
from explainer.errors import UsageError


def test_every_shipped_recipe_loads_with_known_typed_options():
    names = recipe_names()
    assert {"seed000-densenet121-fgsm", "seed001-densenet121-gray", "seed001-custom-cnn"} <= set(names)
    for name in names:
        options = load_recipe(name)
        assert options and "description" not in options and set(options) <= set(RECIPE_KEYS)


@pytest.mark.parametrize("text, fragment", [
    ("backbone: densenet121\nepochs: [3\n", ":3: not valid YAML"),  # the line where the parser gave up
    ("- a list\n", "a recipe is a mapping"),
    ("backbone: densenet121\nepoch: 3\n", "unknown option 'epoch'"),
    ("grayscale: 1\n", "grayscale has the wrong type (int)"),
    ("epochs: true\n", "epochs has the wrong type (bool)"),
])
def test_a_broken_user_recipe_is_one_line_naming_the_file(tmp_path, text, fragment):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(UsageError) as err:
        load_recipe(str(path))
    message = str(err.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_a_recipe_that_is_not_a_regular_file_is_refused(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="not a regular file"):
        load_recipe(str(fifo))
    with pytest.raises(UsageError, match="not a known recipe"):
        load_recipe("no-such-recipe")
