"""The operators' templates run sandboxed: no Python internals, no runaway memory or output."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from service.errors import TemplateError
from service.model import Category
from service.settings import SiteSettings
from service.templating import MAX_OUTPUT, Templates

ZONE = ZoneInfo("Asia/Ho_Chi_Minh")
NS = "{% set ns = namespace(s='x' * 99999) %}"

HOSTILE = {
    "repeat": "{{ 'x' * 50000000 }}",
    "repeat-list": "{{ [0] * 50000000 }}",
    "class": "{{ ''.__class__ }}",
    "mro": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__ }}",
    "func-globals": "{{ self._TemplateReference__context.environment }}",
    "format-attr": "{{ '{0.__class__}'.format('') }}",
    "power": "{{ 10 ** 99999999 }}",
    "range": "{% for i in range(10**9) %}{% endfor %}",
    "percent": "{{ '%999999999d' % 1 }}",
    "percent-star": "{{ '%*d' % (999999999, 1) }}",
    "str-format": "{{ '{:999999999}'.format(1) }}",
    "ljust": "{{ 'x'.ljust(999999999) }}",
    "zfill": "{{ 'x'.zfill(999999999) }}",
    "center-filter": "{{ 'x'|center(999999999) }}",
    "indent-filter": "{{ 'a\nb'|indent(999999999) }}",
    "format-filter": "{{ '%999999999s'|format('x') }}",
    "replace": "{{ ('x' * 99999).replace('x', 'x' * 99999) }}",
    "replace-filter": "{{ ('x' * 99999)|replace('x', 'x' * 99999) }}",
    "join": "{{ ('x' * 99999).join('x' * 99999) }}",
    "join-filter": "{{ ('x' * 99999)|join('x' * 99999) }}",
    "concat-doubling": NS + "{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "plus-doubling": NS + "{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "output": "{% for i in range(99999) %}{{ 'x' * 99999 }}{% endfor %}",
    "nested-loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
    "{% endfor %}",
    "nested-loops-in-macro": "{% macro m() %}{% for j in range(100000) %}{% endfor %}"
    "{% endmacro %}{% for i in range(100000) %}{{ m() }}{% endfor %}",
    "bytes": "{{ ('x' * 100000).encode() * 20000 }}",
    "bytes-join": "{{ (('x' * 99999).encode()).join([('x' * 99999).encode()] * 99) }}",
    "bytes-ljust": "{{ b'x'.ljust(999999999) if false else ('x').encode().ljust(999999999) }}",
    "batch": "{{ ['x']|batch(300000000, 'x')|list }}",
    "slice": "{{ ['x']|slice(300000000, 'x')|list }}",
    "big-int": "{% set ns = namespace(x=3) %}{% for i in range(64) %}"
    "{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
    "big-power": "{{ (10 ** 64) ** 64 }}",
    "lipsum": "{{ lipsum(n=10000000) }}",
    "undefined": "{{ nope }}",
    "raises": "{{ 1 // 0 }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_templates_fail_with_template_error(tmp_path: Path, name: str) -> None:
    (tmp_path / "t.html.j2").write_text(HOSTILE[name], encoding="utf-8")
    templates = Templates(tmp_path, zone=ZONE)
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as caught:
            templates.render("t.html.j2")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "t.html.j2" in str(caught.value)
    assert peak < 20 * MAX_OUTPUT, f"{name} allocated {peak:,} bytes before it was stopped"


# bantin's own data is read without the sandbox's checks (templating._data_fields): only
# its fields; everything past a field is checked as before
THROUGH_DATA = {
    "field-class": "{{ category.name.__class__ }}",
    "object-class": "{{ category.__class__ }}",
    "slots": "{{ category.__slots__ }}",
    "method-globals": "{{ category.page_path.__globals__ }}",
    "settings-class": "{{ site.__class__.__mro__ }}",
    "settings-path-class": "{{ site.templates_dir.__class__ }}",
    "settings-dict": "{{ site.__dict__ }}",
}


@pytest.mark.parametrize("name", sorted(THROUGH_DATA))
def test_bantin_data_leads_nowhere_but_its_fields(tmp_path: Path, name: str) -> None:
    (tmp_path / "t.html.j2").write_text(THROUGH_DATA[name], encoding="utf-8")
    templates = Templates(tmp_path, zone=ZONE)
    site = SiteSettings(title="T", base_url="https://example.gov.vn")
    with pytest.raises(TemplateError, match=r"t\.html\.j2"):
        templates.render("t.html.j2", category=Category("Tin <a>", "tin"), site=site)


def test_bantin_data_fields_read_as_ever(tmp_path: Path) -> None:
    (tmp_path / "t.html.j2").write_text(
        "{{ category.name }}|{{ category.slug|upper }}|{{ category.page_path() }}|"
        "{{ site.title }}|{{ site.templates_dir.name }}|{{ site.accent_color }}",
        encoding="utf-8",
    )
    site = SiteSettings(title="T&", base_url="https://example.gov.vn")
    out = Templates(tmp_path, zone=ZONE).render(
        "t.html.j2", category=Category("Tin <a>", "tin"), site=site
    )
    assert out == "Tin &lt;a&gt;|TIN|categories/tin/|T&amp;|templates|#0b57a4"


def test_ordinary_template_features_still_work(tmp_path: Path) -> None:
    (tmp_path / "t.html.j2").write_text(
        "{{ '%s-%03d' % ('a', 7) }}|{{ '{:>4}'.format('b') }}|{{ 'c'|center(5) }}|"
        "{{ ['d', 'e']|join(', ') }}|{{ 'f' ~ 'g' }}|{{ 1 + 2 }}|{{ 2 ** 10 }}|{{ 'x' * 3 }}|"
        "{{ 'hi'.replace('h', 'H') }}|{{ 'a\nb'|indent(2) }}|{{ '%s'|format(1) }}|"
        "{{ {'k': 1}|tojson }}|{{ when|short_date }}|{{ when|long_date }}|{{ t }}",
        encoding="utf-8",
    )
    out = Templates(tmp_path, zone=ZONE).render(
        "t.html.j2", when=datetime(2026, 11, 20, 20, 0, tzinfo=UTC), t="<b>&</b>"
    )
    assert out == (
        'a-007|   b|  c  |d, e|fg|3|1024|xxx|Hi|a\n  b|1|{"k": 1}|21/11/2026|'
        "Thứ Bảy, ngày 21 tháng 11 năm 2026|&lt;b&gt;&amp;&lt;/b&gt;"
    )


def test_syntax_errors_and_missing_templates(tmp_path: Path) -> None:
    (tmp_path / "bad.html.j2").write_text("line one\n{% if %}\n", encoding="utf-8")
    templates = Templates(tmp_path, zone=ZONE)
    with pytest.raises(TemplateError, match=r"bad\.html\.j2:2"):
        templates.render("bad.html.j2")
    with pytest.raises(TemplateError, match="not found"):
        templates.render("missing.html.j2")
    problems = [str(p) for p in templates.check(["bad.html.j2", "missing.html.j2"])]
    assert len(problems) == 2
    assert "bad.html.j2:2" in problems[0]
    assert "missing.html.j2" in problems[1]


def test_repository_templates_compile(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2] / "templates"
    names = ["index.html.j2", "article.html.j2", "category.html.j2"]
    assert Templates(repo, zone=ZONE).check(names) == []
