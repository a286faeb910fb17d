"""The operators' Jinja2 templates: loaded sandboxed, autoescaped for HTML, output capped.

Operators edit templates/, so a template must not reach Python internals (the sandbox) nor
exhaust the machine (``'x' * 10**9``): big repetitions and powers are refused and rendered
output is capped.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_datetime
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from service.errors import TemplateError

MAX_OUTPUT = 5_000_000  # characters; a digest or page far beyond this is a runaway template
_MAX_REPEAT = 100_000
LONG_DATE = "EEEE, 'ngày' d 'tháng' M 'năm' y"  # babel's own "full" pattern reads oddly in vi


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset(["*", "**"])

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
        binop: Callable[[Any, Any], Any] = operator.mul if op == "*" else operator.pow
        return binop(left, right)


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

        def long_date(value: datetime) -> str:
            return format_datetime(value.astimezone(zone), LONG_DATE, locale=locale)

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
                    raise TemplateError(name, f"output exceeds {MAX_OUTPUT:,} characters")
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
            raise TemplateError(name, f"refused by the sandbox: {exc}") from exc
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
