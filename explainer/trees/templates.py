"""Prompt and explanation templates: jinja2, sandboxed, strict about undefined variables.

Tree files come from users, so templates render in jinja2's sandbox; a typo in a
variable name must fail when the tree is compiled, not half-way through a
batch, hence StrictUndefined plus a compile-time render with sample values.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)

# Provided by the engine for every image: where the VLM should look.
RUNTIME_VARS: dict[str, str] = {
    "roi": "the region inside the red box",
}

_SPACES = re.compile(r"\s+")


def undeclared_variables(source: str) -> set[str]:
    """Variables the template reads; raises TemplateSyntaxError on bad syntax."""
    return set(meta.find_undeclared_variables(ENV.parse(source)))


def compile_template(source: str):
    return ENV.from_string(source)


def render(template: Any, scope: Mapping[str, Any]) -> str:
    """Render and normalise whitespace (YAML block scalars leave newlines behind)."""
    return _SPACES.sub(" ", template.render(**scope)).strip()


__all__ = ["ENV", "RUNTIME_VARS", "TemplateSyntaxError", "compile_template", "render", "undeclared_variables"]
