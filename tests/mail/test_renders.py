"""Digests made from a shared render are the bytes a whole render gives (mail/renders.py).

Every subscriber's message is composed twice: by a Composer that shares renders and by one
that renders every digest whole; the bytes must be equal for every kind of name (none, plain,
Vietnamese, with characters HTML escapes), every kind of category choice, and templates an
operator edited in ways that cannot be shared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_compose import ARTICLES, GOLDEN, KEY, LONG_TITLE, NOW, configure, scrub

from service.mail.compose import Composer
from service.mail.mime import message_id
from service.mail.renders import shareable
from service.model import Subscriber

PEOPLE = [
    Subscriber("hoa.nguyen@example.org", "Nguyễn Thị Hoa", "daily", None),
    Subscriber("lan@example.org", None, "daily", None),
    Subscriber("minh@example.org", "Trần Văn Minh", "daily", frozenset({"thong-bao"})),
    Subscriber("tuan@example.org", "Tuấn & Cộng sự <Ban>", "daily", None),
    Subscriber("an@example.org", 'An "Bé" O\'Neil', "daily", frozenset()),
    Subscriber("binh@example.org", "", "daily", None),
    Subscriber("chi@example.org", "Chi\xa0Lê", "daily", None),
    Subscriber("dung@example.org", "Dũng", "daily", None),
]


def messages(composer: Composer) -> list[bytes]:
    ids = [a.id for a in ARTICLES]
    return [
        composer.compose(p, ARTICLES, "daily", message_id(p.key, ids, composer.domain), NOW)
        for p in PEOPLE
    ]


def whole_composer(project: Path) -> Composer:
    composer = Composer(configure(project, LONG_TITLE), KEY)
    composer.shared.enabled = False
    return composer


def test_shared_renders_give_the_bytes_of_whole_ones(project: Path) -> None:
    shared = Composer(configure(project, LONG_TITLE), KEY)
    assert messages(shared) == messages(whole_composer(project))
    # most were made from a shared render (names HTML would escape are rendered whole)
    assert shared.shared.enabled and shared.shared.hits >= 5
    assert scrub(messages(shared)[0]) == (GOLDEN / "digest.eml").read_bytes()


@pytest.mark.parametrize(
    "edit",
    [
        "{{ subscriber.name | upper }}",
        "{{ (subscriber.name or 'bạn') ~ '!' }}",
        "{% if subscriber.name == 'Dũng' %}Chào anh Dũng{% endif %}",
        "{{ subscriber.email[0] }}",
        "{% macro hi(n) %}{{ n }}{% endmacro %}{{ hi(subscriber.name) }}",
        "{{ unsubscribe_url | length }}",
        "{{ subscriber }}",
    ],
)
def test_templates_that_use_a_personal_value_otherwise_are_rendered_whole(
    project: Path, edit: str
) -> None:
    template = project / "templates" / "email" / "digest.txt.j2"
    if not template.exists():  # the project uses the packaged templates: copy one to edit
        template.parent.mkdir(parents=True, exist_ok=True)
        template.write_text("Xin chào {{ subscriber.name }}\n", encoding="utf-8")
    template.write_text(template.read_text(encoding="utf-8") + edit + "\n", encoding="utf-8")
    shared = Composer(configure(project, LONG_TITLE), KEY)
    assert messages(shared) == messages(whole_composer(project))
    assert shared.shared.hits == 0


def test_a_shared_render_that_differs_turns_sharing_off(project: Path) -> None:
    """The check of the first digest of each shared render catches what the analysis missed."""
    shared = Composer(configure(project, LONG_TITLE), KEY)
    shared.shared._plans.clear()
    original = shared.shared._make

    def wrong(context: dict[str, object], values: dict[str, str]) -> object:
        made = original(context, values)  # type: ignore[arg-type]
        assert made is not None
        made.text += "một dòng thừa"
        return made

    shared.shared._make = wrong  # type: ignore[method-assign]
    assert messages(shared) == messages(whole_composer(project))
    assert not shared.shared.enabled and shared.shared.hits == 0


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Chào {{ subscriber.name }}", True),
        ("Chào {{ subscriber.name or subscriber.email }}", True),
        ("{% if subscriber.name %}Chào {{ subscriber.name }}{% endif %}", True),
        ("{% if not subscriber.categories %}mọi mục{% endif %}", True),
        ("{{ subscriber.categories }}", False),
        ("{{ subscriber.name | e }}", False),
        ("{{ subscriber.name ~ '' }}", False),
        ("{{ 'a' if subscriber.name else 'b' }}", True),
        ("{{ subscriber.name if x else 'b' }}", True),
        ("{{ subscriber.password }}", False),
        ("{% include 'x' %}{{ subscriber.name }}", False),
        ("{{ unsubscribe_url }}", True),
        ("{{ unsubscribe_url[:10] }}", False),
    ],
)
def test_shareable_reads_the_syntax_tree(project: Path, source: str, expected: bool) -> None:
    composer = Composer(configure(project, LONG_TITLE), KEY)
    tree = composer.templates.env.parse(source)
    assert shareable(tree, frozenset({"unsubscribe_url"})) is expected
