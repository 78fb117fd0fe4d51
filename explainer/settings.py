"""Settings of ``explain``: one table of names, types and allowed values, filled from three sources.

Precedence: the command line, then ``EXPLAIN_<NAME>`` environment variables,
then a YAML config file (``--config`` or ``EXPLAIN_CONFIG``), then the default.
An empty environment variable (``EXPLAIN_DETECTOR=``) means unset, as does
``key:`` with no value in the file: an empty path must never mean "the current
folder". Every value is checked against the table, whatever its source, so
``device: 7`` or a list given as ``tree`` is one line naming the file and key.
"""

from __future__ import annotations

import difflib
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from explainer.errors import UsageError
from explainer.pipeline import MAX_BATCH_IMAGES
from explainer.safe_io import read_text_capped

MAX_BATCH_SIZE = 4096  # images per detector batch; more only costs memory
MAX_WALK_STEPS = 1_000_000
MAX_WORKERS = 1024  # Ray actors, each loading the models once


@dataclass(frozen=True)
class Setting:
    name: str  # the attribute on args; the long option is --name with dashes
    kind: type  # str, int or float
    default: Any = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    what: str = ""  # for messages: what a string setting names
    key: str | None = None  # the name in the config file and the environment, when not ``name``

    @property
    def file_key(self) -> str:
        return self.key or self.name

    @property
    def env(self) -> str:
        return f"EXPLAIN_{self.file_key.upper()}"

    @property
    def option(self) -> str:
        return "--" + self.file_key.replace("_", "-")

    def check(self, value: Any, source: str) -> Any:
        """The value converted to this setting's type, or a UsageError naming ``source``."""
        if self.kind in (int, float):
            what = "an integer" if self.kind is int else "a number"
            allowed = (int,) if self.kind is int else (int, float)
            if isinstance(value, str):
                try:
                    value = int(value.strip(), 10) if self.kind is int else float(value.strip())
                except ValueError:
                    raise UsageError(f"{source}: must be {what}, not {value!r}") from None
            elif isinstance(value, bool) or not isinstance(value, allowed):
                raise UsageError(f"{source}: must be {what}, not {_kind_of(value)} {value!r}")
            if self.kind is float and not math.isfinite(value):
                raise UsageError(f"{source}: must be a finite number, not {value!r}")
            value = self.kind(value)
            if self.minimum is not None and value < self.minimum:
                raise UsageError(f"{source}: must be at least {self.minimum}, not {value}")
            if self.maximum is not None and value > self.maximum:
                raise UsageError(f"{source}: must be at most {self.maximum:,}, not {value:,}")
            return value
        if not isinstance(value, str):
            expected = f"one of {', '.join(self.choices)}" if self.choices else f"a string ({self.what or 'text'})"
            raise UsageError(f"{source}: must be {expected}, not {_kind_of(value)} {value!r}")
        if self.choices is not None and value not in self.choices:
            raise UsageError(f"{source}: must be one of {', '.join(self.choices)}, not {value!r}{_did_you_mean(value, self.choices)}")
        if "\x00" in value:
            raise UsageError(f"{source}: contains a NUL character")
        return value


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("tree", str, None, what="a question tree file"),
    Setting("strategy", str, "tree", choices=("tree", "direct")),
    Setting("vlm", str, None, what="a Hugging Face id or a folder"),
    Setting("detector", str, None, what="a classifier checkpoint"),
    Setting("sr", str, None, what="super-resolution weights"),
    Setting("mask", str, None, what="a mask checkpoint"),
    Setting("device", str, "auto", choices=("auto", "cpu", "cuda")),
    Setting("quantize", str, None, choices=("4bit", "8bit")),
    Setting("batch_size", int, 32, minimum=1, maximum=MAX_BATCH_SIZE),
    Setting("max_steps", int, 2000, minimum=1, maximum=MAX_WALK_STEPS),
    Setting("index_from", str, "name", choices=("name", "order")),
    Setting("calibration", str, None, what="a calibration file"),
    Setting("batch_images", int, None, minimum=1, maximum=MAX_BATCH_IMAGES),
    Setting("packing", str, "rows", choices=("rows", "exact")),
    Setting("engine", str, "local", choices=("local", "ray")),
    Setting("ray_address", str, None, what="a Ray address"),
    Setting("workers", int, 2, minimum=1, maximum=MAX_WORKERS),
    Setting("worker_cpus", float, None, minimum=0),
    Setting("worker_gpus", float, 0.0, minimum=0),
    Setting("vlm_server", str, None, what="an OpenAI-compatible server URL"),
    Setting("vlm_concurrency", int, 16, minimum=1, maximum=1024),
    Setting("obj", str, None, what="an object class", key="class"),
)}
BY_FILE_KEY: dict[str, Setting] = {s.file_key: s for s in SETTINGS.values()}


def _kind_of(value: Any) -> str:
    return {list: "a list", dict: "a mapping", bool: "a boolean", int: "an integer", float: "a number",
            str: "a string"}.get(type(value), type(value).__name__)


def _did_you_mean(word: str, known: Any) -> str:
    close = difflib.get_close_matches(word.replace("-", "_"), list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def env_value(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """An environment variable, with empty (or blank) meaning unset."""
    value = (os.environ if environ is None else environ).get(name)
    return value if value is not None and value.strip() else None


def read_config(path: str) -> dict[str, Any]:
    """A config file as {attribute name: checked value}; every problem is one line naming the file and key."""
    try:
        data = yaml.safe_load(read_text_capped(path, what="config file"))
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: cannot read config: {' '.join(str(exc).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a config file is a mapping of settings, not {_kind_of(data)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        setting = BY_FILE_KEY.get(key) if isinstance(key, str) else None
        if setting is None:
            raise UsageError(f"{path}: unknown setting {key!r}{_did_you_mean(str(key), BY_FILE_KEY)}; "
                             f"known: {', '.join(sorted(BY_FILE_KEY))}")
        if value is None or value == "":
            continue  # `key:` with no value: unset
        out[setting.name] = setting.check(value, f"{path}: {key}")
    return out


def resolve(args: Any, environ: Mapping[str, str] | None = None) -> None:
    """Fill each unset attribute of ``args`` from the environment, then the config file, then the default; check all."""
    config_path = getattr(args, "config", None) or env_value("EXPLAIN_CONFIG", environ)
    config = read_config(config_path) if config_path else {}
    for name, setting in SETTINGS.items():
        value = getattr(args, name, None)
        if value is not None:
            setattr(args, name, setting.check(value, setting.option))
            continue
        raw = env_value(setting.env, environ)
        if raw is not None:
            value = setting.check(raw, setting.env)
        elif name in config:
            value = config[name]
        else:
            value = setting.default
        setattr(args, name, value)
