"""The operators' Jinja2 templates: loaded sandboxed, autoescaped for HTML, under a budget.

Operators edit templates/, so a template must not reach Python internals (the sandbox) nor
exhaust the machine. Every render runs under a budget: a cap on output, on the size of every
value it builds (strings, bytes, lists, integers), on loop iterations (each ``{% for %}`` is
counted, nested ones too) and on time. A template that exceeds it fails with a TemplateError
naming it; nothing it does can hold a thread for longer than ``RENDER_SECONDS``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import functools
import operator
import re
import string
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from babel.dates import format_datetime
from jinja2 import meta, nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from service.errors import TemplateError
from service.model import WEEKDAYS_VI, Event

MAX_OUTPUT = 5_000_000  # characters; a digest or page far beyond this is a runaway template
MAX_ITERATIONS = 1_000_000  # loop iterations per render, all loops together
RENDER_SECONDS = 10.0  # wall time per render; a digest takes about a millisecond
MAX_INT_BITS = 10_000  # integers a template may build (about 3,000 decimal digits)
_MAX_REPEAT = 100_000
_CHECK_CLOCK_EVERY = 1024  # operations between looks at the clock
LONG_DATE = "EEEE, 'ngày' d 'tháng' M 'năm' y"  # babel's own "full" pattern reads oddly in vi
CONSENT_TEMPLATE = "subscribe_consent.txt.j2"  # what a subscriber agrees to, recorded word for word


_BINOPS: dict[str, Callable[[Any, Any], Any]] = {
    "*": operator.mul,
    "**": operator.pow,
    "%": operator.mod,
    "+": operator.add,
}
_WIDTH_METHODS = frozenset(["center", "ljust", "rjust", "zfill", "expandtabs"])
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
_DIGITS = re.compile(r"\d+")


class _Budget:
    """What one render may still spend: loop iterations, operations, and time."""

    __slots__ = ("deadline", "iterations", "operations")

    def __init__(self, seconds: float, iterations: int) -> None:
        self.deadline = time.monotonic() + seconds
        self.iterations = iterations
        self.operations = 0

    def step(self) -> None:
        """One operation (a call, an operator, an output chunk): look at the clock now and then."""
        self.operations += 1
        if self.operations % _CHECK_CLOCK_EVERY == 0:
            self.check_clock()

    def check_clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise SecurityError(f"the template took longer than {RENDER_SECONDS:g} s")

    def iterate(self) -> None:
        self.iterations -= 1
        if self.iterations < 0:
            raise SecurityError(f"the template ran more than {MAX_ITERATIONS:,} loop iterations")
        self.step()


# The budget of the render running in this thread (renders nest: an include shares it).
_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("budget", default=None)


def _spend() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.step()


def _budgeted(iterable: Any) -> Iterator[Any]:
    """Every ``{% for %}`` iterates through here (see _Sandbox._parse)."""
    budget = _BUDGET.get()
    for item in iterable:
        if budget is not None:
            budget.iterate()
        yield item


def _refuse_big(what: str, size: int) -> None:
    if size > _MAX_REPEAT:
        raise SecurityError(f"{what} too large in template")


def _check_size(value: Any) -> Any:
    """Growing text step by step (``s ~ s`` in a loop) doubles memory: stop at the output cap."""
    if isinstance(value, str | bytes | bytearray | list | tuple) and len(value) > MAX_OUTPUT:
        raise SecurityError(f"a value of {len(value):,} items is too large in template")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise SecurityError("an integer too large in template")
    return value


def _check_ints(op: str, left: Any, right: Any) -> None:
    """Refuse integer arithmetic whose result would be huge, before computing it."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return
    if op == "**" and right > 0 and left not in (0, 1, -1):
        if right > 64 or left.bit_length() * right > MAX_INT_BITS:
            raise SecurityError("exponent too large in template")
    elif op == "*" and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise SecurityError("an integer too large in template")


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
    if all(isinstance(v, str) for v in (text, old, new)) or all(
        isinstance(v, bytes | bytearray) for v in (text, old, new)
    ):
        times = text.count(old) if old else len(text) + 1
        if isinstance(count, int) and count >= 0:
            times = min(times, count)
        if len(text) + times * (len(new) - len(old)) > MAX_OUTPUT:
            raise SecurityError("replacement result too large in template")


def _check_join(separator: Any, items: list[Any]) -> None:
    text = str | bytes | bytearray
    size = len(separator) * max(len(items) - 1, 0) if isinstance(separator, text) else 0
    size += sum(len(i) for i in items if isinstance(i, text))
    if size > MAX_OUTPUT:
        raise SecurityError("joined result too large in template")


def _check_method(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Refuse str methods that would build a huge string before the output cap could see it."""
    inner = getattr(method, "__wrapped__", method)  # the sandbox wraps str.format
    owner = getattr(inner, "__self__", None)
    name = getattr(inner, "__name__", "")
    if not isinstance(owner, str | bytes | bytearray):
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
        elif name in ("batch", "slice"):  # both pad their lists to the size asked for
            for value in (*values[1:2], *kwargs.values()):
                if isinstance(value, int) and not isinstance(value, bool):
                    _refuse_big(f"{name} size", value)
        _spend()
        return _check_size(func(*args, **kwargs))

    return guarded


def _data_fields(cls: type) -> frozenset[str]:
    """The public fields of one of bantin's own data types (a dataclass or a pydantic model
    defined in ``service``), whose values are data; nothing for any other type."""
    if not cls.__module__.startswith("service."):
        return frozenset()
    if dataclasses.is_dataclass(cls):
        names: Iterable[str] = (f.name for f in dataclasses.fields(cls))
    else:
        names = getattr(cls, "model_fields", None) or ()
    return frozenset(n for n in names if not n.startswith("_"))


class _Codegen(CodeGenerator):
    """``a ~ b`` through the environment, so that the sandbox can cap what it builds."""

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.checked_size(")
        super().visit_Concat(node, frame)
        self.write(")")


_GUARDED_FILTERS = (
    "center", "indent", "tojson", "wordwrap", "replace", "format", "join", "batch", "slice",
)  # fmt: skip
_BUDGETED = "bantin_budgeted"  # the filter every for loop's iterable goes through


class _Sandbox(SandboxedEnvironment):
    intercepted_binops = frozenset(_BINOPS)
    code_generator_class = _Codegen

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._safe: dict[tuple[type, str], bool] = {}
        self._fields: dict[type, frozenset[str]] = {}
        for name in _GUARDED_FILTERS:
            self.filters[name] = _guarded_filter(name, self.filters[name])
        self.filters[_BUDGETED] = _budgeted
        # lipsum(n) writes n paragraphs: nothing an office needs, and a way to exhaust memory
        self.globals.pop("lipsum", None)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        """Parse, then route every loop's iterable through the budget (nested loops included)."""
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, _BUDGETED, [], [], None, None, lineno=loop.lineno)
        return tree

    def getattr(self, obj: Any, attribute: str) -> Any:
        # A field of bantin's own data (dataclasses, settings models) is plain data, which the
        # sandbox would hand over after three checks; ~45 lookups a page: read it directly.
        fields = self._fields.get(type(obj))
        if fields is None:
            fields = self._fields[type(obj)] = _data_fields(type(obj))
        if attribute in fields:
            return getattr(obj, attribute)
        return super().getattr(obj, attribute)

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
        _spend()
        if op == "**" and isinstance(right, int) and right > 64:
            raise SecurityError("exponent too large in template")
        _check_ints(op, left, right)
        if op == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | bytes | bytearray | list | tuple)
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
        _spend()
        args = _check_method(__obj, args, kwargs)
        return _check_size(super().call(__context, __obj, *args, **kwargs))


def _collect(template: jinja2.Template, context: dict[str, Any], name: str) -> str:
    """The output of ``template``, each chunk counted against the budget and the output cap.

    What ``template.generate`` does without its extra generator around every chunk, and with
    the budget's step inlined: a page is ~100 chunks, and this loop was a quarter of the time
    of rendering an article page."""
    budget = _BUDGET.get()
    assert budget is not None, "rendered outside Templates.render"
    parts: list[str] = []
    size = 0
    try:
        for chunk in template.root_render_func(template.new_context(context)):
            budget.operations += 1
            if budget.operations % _CHECK_CLOCK_EVERY == 0:
                budget.check_clock()
            size += len(chunk)
            if size > MAX_OUTPUT:
                raise TemplateError(name, f"output exceeds {MAX_OUTPUT:,} characters", limit=True)
            parts.append(chunk)
    except TemplateError:
        raise
    except Exception:
        template.environment.handle_exception()  # raises it again, at the template's line
    return "".join(parts)


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

        def event_when(event: Event) -> str:
            """ "07:30–11:30, thứ Ba 15/12/2026" in the site's zone (an end on another day is
            written in full)."""
            start = event.start.astimezone(zone)
            day = f"{WEEKDAYS_VI[start.weekday()]} {start:%d/%m/%Y}"
            if event.end is None:
                return f"{start:%H:%M}, {day}"
            end = event.end.astimezone(zone)
            if end.date() == start.date():
                return f"{start:%H:%M}–{end:%H:%M}, {day}"
            return (
                f"{start:%H:%M}, {day} – {end:%H:%M}, {WEEKDAYS_VI[end.weekday()]} {end:%d/%m/%Y}"
            )

        def clock_time(value: datetime) -> str:
            """ " lúc 08:00" when the moment has a time of day in the site's zone, else ""."""
            local = value.astimezone(zone)
            return "" if (local.hour, local.minute) == (0, 0) else local.strftime(" lúc %H:%M")

        def long_moment(value: datetime) -> str:
            return long_date(value) + clock_time(value)

        def short_moment(value: datetime) -> str:
            return short_date(value) + clock_time(value).replace(" lúc", ",")

        self.env.filters.update(
            long_date=long_date,
            short_date=short_date,
            date_time=date_time,
            long_moment=long_moment,
            short_moment=short_moment,
            event_when=event_when,
        )

    def render(self, name: str, **context: Any) -> str:
        """Render ``name`` under the budget; TemplateError names the template for any failure."""
        token = _BUDGET.set(_Budget(RENDER_SECONDS, MAX_ITERATIONS))
        try:
            return self._render(name, context)
        finally:
            _BUDGET.reset(token)

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            template = self.env.get_template(name)
            return _collect(template, context, name)
        except TemplateError:
            raise
        except jinja2.TemplateNotFound as exc:
            raise TemplateError(
                str(exc),
                f"not found in {self.directory.absolute()}; restore it from the repository",
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(
                f"{exc.name or name}:{exc.lineno}", exc.message or "syntax error"
            ) from exc
        except SecurityError as exc:
            raise TemplateError(
                self._where(name, exc), f"refused by the sandbox: {exc}", limit=True
            ) from exc
        except jinja2.UndefinedError as exc:
            raise TemplateError(
                self._where(name, exc), f"{exc.message}; check the variable names"
            ) from exc
        except Exception as exc:  # a template can raise anything a filter raises
            raise TemplateError(self._where(name, exc), f"failed to render: {exc}") from exc

    def _where(self, name: str, exc: BaseException) -> str:
        """``name:line`` of the template line that raised (an included one's, if it was there);
        jinja2 rewrites tracebacks so that a template's frames carry its file and line."""
        root = str(self.directory.resolve())
        found = name
        tb = exc.__traceback__
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename.endswith(".j2"):
                resolved = str(Path(filename).resolve())
                relative = (
                    resolved[len(root) + 1 :] if resolved.startswith(root + "/") else filename
                )
                found = f"{relative}:{tb.tb_lineno}"
            tb = tb.tb_next
        return found

    def unknown_names(self, name: str, known: Iterable[str]) -> list[TemplateError]:
        """The variables ``name`` uses that are neither in ``known`` (what bantin passes it) nor
        set by the template itself, each with the first line it is used on; found without
        rendering, so a branch the sample data never takes is checked too."""
        try:
            source = self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
            tree = self.env.parse(source, name)
        except (jinja2.TemplateNotFound, jinja2.TemplateSyntaxError):
            return []  # check() reports those
        allowed = set(known) | set(self.env.globals)
        problems = []
        for variable in sorted(meta.find_undeclared_variables(tree) - allowed):
            line = min(
                (n.lineno for n in tree.find_all(nodes.Name) if n.name == variable),
                default=None,
            )
            close = difflib.get_close_matches(variable, sorted(set(known)), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                TemplateError(
                    f"{name}:{line}" if line else name,
                    f"{variable!r} is undefined: bantin gives this template "
                    f"{', '.join(sorted(set(known)))}{hint}",
                )
            )
        return problems

    def check(self, names: list[str]) -> list[TemplateError]:
        """Compile each template; return the problems (syntax errors, missing files)."""
        problems = []
        for name in names:
            try:
                self.env.get_template(name)
            except jinja2.TemplateNotFound:
                problems.append(TemplateError(name, f"not found in {self.directory.absolute()}"))
            except jinja2.TemplateSyntaxError as exc:
                problems.append(
                    TemplateError(f"{exc.name or name}:{exc.lineno}", exc.message or "syntax error")
                )
        return problems


def render_consent(templates: Templates, **context: Any) -> str:
    """The consent text of the subscription form, on one line as it is shown and recorded;
    TemplateError if the template fails or says nothing."""
    text = " ".join(templates.render(CONSENT_TEMPLATE, **context).split())
    if not text:
        raise TemplateError(
            CONSENT_TEMPLATE, "rendered an empty text; say what subscribers agree to"
        )
    return text
