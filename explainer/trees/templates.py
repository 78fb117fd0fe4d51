"""Prompt and explanation templates: jinja2, sandboxed, strict, and bounded.

Tree files come from users, so templates render in jinja2's sandbox; a typo in a
variable name must fail when the tree is compiled, not half-way through a
batch, hence StrictUndefined plus a compile-time render with sample values.

The sandbox stops a template from reaching Python internals, but not from
spending memory or time: ``'x' * 10**9``, ``range(10**9)``, a macro that calls
itself twice. So on top of the sandbox, a tree's template

- may not ``include``, ``import``, ``extend`` or define ``block``s (a tree's
  templates are single strings; they never read other files);
- may define macros, but a macro may not call a macro (no recursion), may not
  be passed around as a value, and ``{% call %}`` and recursive loops are refused;
- is at most :data:`MAX_TEMPLATE_CHARS` long, and every value it builds (by
  ``*``, ``%``, a filter or a method call) and its rendered text are at most
  :data:`MAX_RENDERED_CHARS`; integers given to ``*``, ``**``, ``range`` and
  string methods are checked *before* the operation runs;
- runs at most :data:`MAX_LOOP_STEPS` loop iterations per render, counted over
  every loop, nested or not.

Templates that are plain text with ``{{ name }}`` holes (nearly all prompts)
skip jinja's code generation: compiling 25,000 templates with jinja takes
longer than the 5 s budget for validating a 50,000-node tree, and substitution
gives the same text for them.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, Mapping

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, Undefined, meta, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

MAX_TEMPLATE_CHARS = 10_000  # one prompt, explanation or preamble as written in the tree
MAX_RENDERED_CHARS = 8_192  # what one render (and any value built on the way) may reach
MAX_LOOP_STEPS = 10_000  # loop iterations per render, all loops together
MAX_RANGE = 1_000  # items range() may produce
MAX_EXPONENT = 64  # right-hand side of **

# {{ roi }}: where the VLM should look. One wording for `explain` and `explain tree walk`:
# the pipeline picks by whether the detector drew a box; a walk without an image takes the box's.
ROI_WITH_BOX = "the region inside the red box"
ROI_WITHOUT_BOX = "the whole image"
RUNTIME_VARS: dict[str, str] = {
    "roi": ROI_WITH_BOX,
}

_SPACES = re.compile(r"\s+")
# A huge width in a format spec ('%999999999s', '{:>999999999}') allocates before anything can check it.
_WIDE_FORMAT = re.compile(r"%[-+ #0]*(\*|\d{5,})|\{[^{}]*:[^{}]*\d{5,}[^{}]*\}")


class TemplateLimitError(SecurityError):
    """A template went over one of the limits above."""


_budget = threading.local()


def _sized(value: Any, what: str) -> Any:
    if isinstance(value, (str, list, tuple, bytes)) and len(value) > MAX_RENDERED_CHARS:
        raise TemplateLimitError(f"{what} builds a value of {len(value):,} items; the limit is {MAX_RENDERED_CHARS:,}")
    return value


def _check_ints(args: tuple, kwargs: Mapping[str, Any], what: str) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_RENDERED_CHARS:
            raise TemplateLimitError(f"{what} is given {value:,}; numbers passed to calls are limited to {MAX_RENDERED_CHARS:,}")
        if isinstance(value, str) and _WIDE_FORMAT.search(value):
            raise TemplateLimitError(f"{what} is given a format with a width over 4 digits")


def range_(*args: int) -> range:
    _check_ints(args, {}, "range()")
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise TemplateLimitError(f"range() of {len(r):,} items; the limit is {MAX_RANGE:,}")
    return r


range_.__name__ = "range"  # what error messages call it


def _loop(iterable: Any):
    """Wraps the iterable of every ``{% for %}``: counts iterations against the per-render budget."""
    for item in iterable:
        _budget.steps = getattr(_budget, "steps", 0) + 1
        if _budget.steps > MAX_LOOP_STEPS:
            raise TemplateLimitError(f"more than {MAX_LOOP_STEPS:,} loop iterations in one render")
        yield item


def _guard_filter(name: str, func):
    @functools.wraps(func)  # keeps jinja's pass_context/pass_environment markers
    def guarded(*args, **kwargs):
        _check_ints(args[1:], kwargs, f"filter '{name}'")
        if args and isinstance(args[0], str) and _WIDE_FORMAT.search(args[0]):
            raise TemplateLimitError(f"filter '{name}' is given a format with a width over 4 digits")
        return _sized(func(*args, **kwargs), f"filter '{name}'")
    return guarded


class BoundedSandbox(SandboxedEnvironment):
    """jinja2's sandbox with the limits of this module."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals = {"range": range_, "dict": dict, "namespace": self.globals["namespace"],
                        "_bounded_loop": _loop}
        self.filters = {name: _guard_filter(name, f) for name, f in self.filters.items()}

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
                raise TemplateLimitError(f"exponent {right} is over the limit of {MAX_EXPONENT}")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() * abs(right) > 4096:
                raise TemplateLimitError("a power this large is over the limit")
        elif operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * max(n, 0) > MAX_RENDERED_CHARS:
                    raise TemplateLimitError(f"repeating {len(seq):,} items {n:,} times goes over the limit of {MAX_RENDERED_CHARS:,}")
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > 4096:
                raise TemplateLimitError("a product of numbers this large is over the limit")
        elif operator == "%" and isinstance(left, str):
            if _WIDE_FORMAT.search(left):
                raise TemplateLimitError("a '%' format with a width over 4 digits")
        return _sized(super().call_binop(context, operator, left, right), f"operator '{operator}'")

    def wrap_str_format(self, value: Any):
        # str.format / format_map are wrapped by the sandbox; check the widths before formatting
        if isinstance(getattr(value, "__self__", None), str) and _WIDE_FORMAT.search(value.__self__):
            raise TemplateLimitError(f"{value.__name__}() on a format with a width over 4 digits")
        return super().wrap_str_format(value)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's signature)
        if isinstance(__obj, Undefined):
            return super().call(__context, __obj, *args, **kwargs)  # raises "... is undefined"
        name = getattr(__obj, "__name__", type(__obj).__name__)
        _check_ints(args, kwargs, f"{name}()")
        owner = getattr(__obj, "__self__", None)
        if name == "replace" and isinstance(owner, str) and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
            grows = owner.count(args[0]) * max(len(args[1]) - len(args[0]), 0) if args[0] else len(owner) * len(args[1])
            if len(owner) + grows > MAX_RENDERED_CHARS:
                raise TemplateLimitError(f"replace() would build {len(owner) + grows:,} characters; the limit is {MAX_RENDERED_CHARS:,}")
        if isinstance(owner, str) and _WIDE_FORMAT.search(owner):
            raise TemplateLimitError(f"{name}() on a format with a width over 4 digits")
        return _sized(super().call(__context, __obj, *args, **kwargs), f"{name}()")


ENV = BoundedSandbox(undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True)

_REFUSED = {
    nodes.Include: "'{% include %}' is not allowed in a tree's templates (they never read other files)",
    nodes.Import: "'{% import %}' is not allowed in a tree's templates (they never read other files)",
    nodes.FromImport: "'{% from ... import %}' is not allowed in a tree's templates (they never read other files)",
    nodes.Extends: "'{% extends %}' is not allowed in a tree's templates (they never read other files)",
    nodes.Block: "'{% block %}' is not allowed in a tree's templates",
    nodes.CallBlock: "'{% call %}' is not allowed in a tree's templates",
}


class TemplateRefused(TemplateSyntaxError):
    """A construct a tree's template may not use; carries the template's line like a syntax error."""


def _check_ast(ast: nodes.Template) -> None:
    for node in ast.find_all(tuple(_REFUSED)):
        raise TemplateRefused(_REFUSED[type(node)], node.lineno)
    macros = {m.name: m for m in ast.find_all(nodes.Macro)}
    for m in macros.values():
        for name in m.body and [n for b in m.body for n in b.find_all(nodes.Name)]:
            if name.name in macros:
                why = "calls itself" if name.name == m.name else f"calls macro '{name.name}'"
                raise TemplateRefused(f"macro '{m.name}' {why}; a macro may not call a macro (no recursion)", name.lineno)
    called = {id(c.node) for c in ast.find_all(nodes.Call)}
    for name in ast.find_all(nodes.Name):
        if name.ctx == "load" and name.name in macros and id(name) not in called:
            raise TemplateRefused(f"macro '{name.name}' may only be called, not passed as a value", name.lineno)
        if name.name == "caller":
            raise TemplateRefused("'caller' is not allowed in a tree's templates", name.lineno)
    for loop in ast.find_all(nodes.For):
        if loop.recursive:
            raise TemplateRefused("recursive loops are not allowed in a tree's templates", loop.lineno)
        loop.iter = nodes.Call(nodes.Name("_bounded_loop", "load", lineno=loop.lineno), [loop.iter], [], None, None,
                               lineno=loop.lineno)


def _parse(source: str) -> tuple[nodes.Template, frozenset[str]]:
    if len(source) > MAX_TEMPLATE_CHARS:
        raise TemplateRefused(f"template is {len(source):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}", 1)
    ast = ENV.parse(source)
    used = set(meta.find_undeclared_variables(ast)) - set(ENV.globals)
    _check_ast(ast)
    return ast, frozenset(used)


# Plain text with {{ name }} holes: rendered by substitution, same text as jinja gives.
_HOLE = re.compile(r"\{\{-?\s*([A-Za-z_][A-Za-z0-9_]*)\s*-?\}\}")
_JINJA_MARK = re.compile(r"\{[{%#]|[%#]\}")


class _Substitution:
    """A template that is text and ``{{ name }}`` holes. Same ``render(**scope)`` as a jinja template."""

    __slots__ = ("parts", "names")

    def __init__(self, parts: list[str]) -> None:
        self.parts = parts  # text, name, text, name, ..., text
        self.names = set(parts[1::2])

    def render(self, **scope: Any) -> str:
        out = []
        for i, part in enumerate(self.parts):
            if i % 2 == 0:
                out.append(part)
            elif part in scope:
                out.append(str(scope[part]))
            else:
                raise UndefinedError(f"'{part}' is undefined")
        return _sized("".join(out), "the template")


def _as_substitution(source: str) -> _Substitution | None:
    parts = _HOLE.split(source)
    if any(_JINJA_MARK.search(text) for text in parts[::2]) or "-}}" in source or "{{-" in source:
        return None
    return _Substitution(parts)


@functools.lru_cache(maxsize=4096)
def _compile_cached(source: str):
    simple = _as_substitution(source)
    if simple is not None:
        if len(source) > MAX_TEMPLATE_CHARS:
            raise TemplateRefused(f"template is {len(source):,} characters; the limit is {MAX_TEMPLATE_CHARS:,}", 1)
        return simple, frozenset(simple.names)
    ast, used = _parse(source)
    return ENV.from_string(ast), used


def undeclared_variables(source: str) -> set[str]:
    """Variables the template reads; raises TemplateSyntaxError on bad syntax or a refused construct."""
    return set(_compile_cached(source)[1])


def compile_template(source: str):
    return _compile_cached(source)[0]


def render(template: Any, scope: Mapping[str, Any]) -> str:
    """Render within the limits and normalise whitespace (YAML block scalars leave newlines behind)."""
    _budget.steps = 0
    try:
        text = template.render(**scope)
    except RecursionError:
        raise TemplateLimitError("the template recursed too deeply") from None
    except (OverflowError, MemoryError) as exc:
        raise TemplateLimitError(f"the template went over a limit: {exc}") from None
    return _SPACES.sub(" ", _sized(text, "the rendered template")).strip()


__all__ = [
    "ENV", "MAX_LOOP_STEPS", "ROI_WITH_BOX", "ROI_WITHOUT_BOX", "MAX_RANGE", "MAX_RENDERED_CHARS", "MAX_TEMPLATE_CHARS", "RUNTIME_VARS",
    "TemplateError", "TemplateLimitError", "TemplateSyntaxError", "compile_template", "render", "undeclared_variables",
]
