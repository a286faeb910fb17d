"""The operators' Jinja2 templates: loaded sandboxed, autoescaped for HTML, output capped.

Operators edit templates/, so a template must not reach Python internals (the sandbox) nor
exhaust the machine (``'x' * 10**9``): big repetitions and powers are refused and rendered
output is capped.
"""

from __future__ import annotations

import functools
import operator
import re
import string
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_datetime
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from service.errors import TemplateError

MAX_OUTPUT = 5_000_000  # characters; a digest or page far beyond this is a runaway template
_MAX_REPEAT = 100_000
LONG_DATE = "EEEE, 'ngày' d 'tháng' M 'năm' y"  # babel's own "full" pattern reads oddly in vi


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "%": operator.mod,
    "+": operator.add,
}
_WIDTH_METHODS = frozenset(["center", "ljust", "rjust", "zfill", "expandtabs"])
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
_DIGITS = re.compile(r"\d+")


def _refuse_big(what: str, size: int) -> None:
    if size > _MAX_REPEAT:
        raise SecurityError(f"{what} too large in template")


def _check_size(value: Any) -> Any:
    """Growing text step by step (``s ~ s`` in a loop) doubles memory: stop at the output cap."""
    if isinstance(value, str | list | tuple) and len(value) > MAX_OUTPUT:
        raise SecurityError(f"a value of {len(value):,} items is too large in template")
    return value


def _check_percent(template: Any, values: Any = ()) -> None:
    if not isinstance(template, str):
        return
    for width, precision in _PERCENT_SPEC.findall(template):
        for number in (width, precision):
            if number == "*":  # the width comes from the values: '%*d' % (10**9, 1)
                for value in values if isinstance(values, tuple) else (values,):
                    if isinstance(value, int):
                        _refuse_big("format width", value)
            elif number:
                _refuse_big("format width", int(number))


def _check_format(template: Any) -> None:
    if not isinstance(template, str):
        return
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format raises the same error when it runs
    for _, _, spec, _ in parsed:
        for number in _DIGITS.findall(spec or ""):
            _refuse_big("format width", int(number))


def _check_replace(text: Any, old: Any, new: Any, count: Any = None) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
        times = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        if len(text) + times * (len(new) - len(old)) > MAX_OUTPUT:
            raise SecurityError("replacement result too large in template")


def _check_join(separator: Any, items: list[Any]) -> None:
    size = len(separator) * max(len(items) - 1, 0) if isinstance(separator, str) else 0
    size += sum(len(i) for i in items if isinstance(i, str))
    if size > MAX_OUTPUT:
        raise SecurityError("joined result too large in template")


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse str methods that would build a huge string before the output cap could see it."""
    inner = getattr(method, "__wrapped__", method)  # the sandbox wraps str.format
    owner = getattr(inner, "__self__", None)
    name = getattr(inner, "__name__", "")
    if not isinstance(owner, str):
        return args
    if name in _WIDTH_METHODS:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int):
                _refuse_big(f"{name} width", value)
    elif name in ("format", "format_map"):
        _check_format(owner)
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, *args[:3])
    elif name == "join" and len(args) == 1:
        items = list(args[0])
        _check_join(owner, items)
        return (items,)
    return args


def _guarded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """A built-in filter with its inputs checked the way ``_check_method`` checks methods."""

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        values = [a for a in args if not isinstance(a, jinja2.nodes.EvalContext)]
        if name in ("center", "indent", "tojson", "wordwrap"):
            for value in (*values[1:], *kwargs.values()):
                if isinstance(value, int) and not isinstance(value, bool):
                    _refuse_big(f"{name} width", value)
        elif name == "replace" and len(values) >= 3:
            _check_replace(*values[:4])
        elif name == "format" and values:
            _check_percent(values[0], tuple(values[1:]))
        elif name == "join" and values:
            items = list(values[0]) if isinstance(values[0], Iterable) else []
            separator = values[1] if len(values) > 1 else kwargs.get("d", "")
            _check_join(separator, [str(i) for i in items])
        return _check_size(func(*args, **kwargs))

    return guarded


class _Codegen(CodeGenerator):
    """``a ~ b`` through the environment, so that the sandbox can cap what it builds."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_size(")
        super().visit_Concat(node, frame)
        self.write(")")


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset(_BINOPS)
    code_generator_class = _Codegen

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._safe: dict[tuple[type, str], bool] = {}
        for name in ("center", "indent", "tojson", "wordwrap", "replace", "format", "join"):
            self.filters[name] = _guarded_filter(name, self.filters[name])

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # The sandbox's answer depends only on the object's type and the attribute's name, and
        # asking it is the largest single cost of rendering a digest: remember it.
        key = (type(obj), attr)
        safe = self._safe.get(key)
        if safe is None:
            safe = self._safe[key] = super().is_safe_attribute(obj, attr, value)
        return safe

    @staticmethod
    def checked_size(value: Any) -> Any:
        return _check_size(value)

    def call_binop(self, context: jinja2.runtime.Context, op: str, left: Any, right: Any) -> Any:
        if op == "**" and isinstance(right, int) and right > 64:
            raise SecurityError("exponent too large in template")
        if op == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > _MAX_REPEAT
                ):
                    raise SecurityError("repetition too large in template")
        if op == "%":
            _check_percent(left, right)
        return _check_size(_BINOPS[op](left, right))

    def call(
        __self,  # jinja2's own signature: a keyword argument may be named "self"
        __context: jinja2.runtime.Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        args = _check_method(__obj, args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


class Templates:
    """A directory of templates, with bantin's filters, rendering with a capped output."""

    def __init__(self, directory: Path, *, zone: Any, language: str = "vi") -> None:
        self.directory = directory
        self.env = _Sandbox(
            loader=jinja2.FileSystemLoader(str(directory)),
            autoescape=jinja2.select_autoescape(["html", "html.j2", "htm", "xml"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=True,
        )
        locale = language.replace("-", "_")

        @functools.lru_cache(maxsize=1024)
        def long_date(value: datetime) -> str:
            return format_datetime(value.astimezone(zone), LONG_DATE, locale=locale)

        @functools.lru_cache(maxsize=4096)
        def short_date(value: datetime) -> str:
            return value.astimezone(zone).strftime("%d/%m/%Y")

        def date_time(value: datetime) -> str:
            return value.astimezone(zone).strftime("%H:%M %d/%m/%Y")

        self.env.filters.update(long_date=long_date, short_date=short_date, date_time=date_time)

    def render(self, name: str, **context: Any) -> str:
        """Render ``name``; TemplateError names the template and line for any failure."""
        try:
            template = self.env.get_template(name)
            parts: list[str] = []
            size = 0
            for chunk in template.generate(**context):
                size += len(chunk)
                if size > MAX_OUTPUT:
                    raise TemplateError(
                        name, f"output exceeds {MAX_OUTPUT:,} characters", limit=True
                    )
                parts.append(chunk)
            return "".join(parts)
        except TemplateError:
            raise
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                str(exc), f"not found in {self.directory}; restore it from the repository"
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{exc.name or name}:{exc.lineno}", exc.message or "syntax error"
            ) from exc
        except SecurityError as exc:
            raise TemplateError(name, f"refused by the sandbox: {exc}", limit=True) from exc
        except jinja2.UndefinedError as exc:
            raise TemplateError(name, f"{exc.message}; check the variable names") from exc
        except Exception as exc:  # a template can raise anything a filter raises
            raise TemplateError(name, f"failed to render: {exc}") from exc

    def check(self, names: list[str]) -> list[TemplateError]:
        """Compile each template; return the problems (syntax errors, missing files)."""
        problems = []
        for name in names:
            try:
                self.env.get_template(name)
            except jinja2.TemplateNotFound:
                problems.append(TemplateError(name, f"not found in {self.directory}"))
            except jinja2.TemplateSyntaxError as exc:
                problems.append(
                    TemplateError(f"{exc.name or name}:{exc.lineno}", exc.message or "syntax error")
                )
        return problems
