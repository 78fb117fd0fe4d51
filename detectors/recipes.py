"""Named training recipes: YAML files in ``detectors/recipes/`` that fill in
``explain train detector`` options (the command line still wins).

``explain train detector DATA --recipe seed001-custom-cnn``; ``--recipe list``
prints them. A recipe may also be a path to your own YAML file with the same keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from explainer.errors import UsageError
from explainer.safe_io import read_yaml_capped

RECIPE_DIR = Path(__file__).parent / "recipes"
MAX_RECIPE_BYTES = 64 * 1024
# Option name -> accepted Python types (bool is not an int here).
RECIPE_KEYS: dict[str, tuple[type, ...]] = {
    "description": (str,), "backbone": (str,), "grayscale": (bool,), "input_norm": (str,), "lr_size": (int,),
    "image_size": (int,), "epochs": (int,), "batch_size": (int,), "lr": (int, float), "weight_decay": (int, float),
    "warmup_epochs": (int, float), "fgsm_eps": (int, float), "adv_weight": (int, float), "adv_start_epoch": (int,), "adv_batchnorm": (str,),
    "augment": (str, list), "val_fraction": (int, float), "select_by": (str,), "patience": (int,),
}


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name: str) -> dict[str, Any]:
    """The recipe's options, type-checked; ``name`` is a built-in recipe or a .yaml path."""
    path = RECIPE_DIR / f"{name}.yaml" if name in recipe_names() else Path(name)
    if path.suffix not in (".yaml", ".yml"):
        raise UsageError(f"--recipe {name}: not a known recipe ({', '.join(recipe_names())}) or a .yaml file")
    data = read_yaml_capped(path, MAX_RECIPE_BYTES, "recipe")
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a recipe is a mapping of option: value")
    for key, value in data.items():
        if key not in RECIPE_KEYS:
            raise UsageError(f"{path}: unknown option {str(key)[:40]!r}; expected one of {', '.join(RECIPE_KEYS)}")
        types = RECIPE_KEYS[key]
        if type(value) is bool and bool not in types or not isinstance(value, types):
            raise UsageError(f"{path}: {key} has the wrong type ({type(value).__name__})")
    data.pop("description", None)
    return data
