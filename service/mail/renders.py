"""Digests rendered once for everyone who gets the same articles; personal values put in after.

A run of 100,000 subscribers who all get today's ten articles would render the same three
templates and inline the same CSS 100,000 times, where only the greeting, the address and the
unsubscribe link differ. ``SharedRenders`` renders a digest once per (templates, articles,
frequency, moment) with stand-ins for the personal values, and makes each subscriber's digest
from it by putting their values where the stand-ins are.

That is exact only if the templates print a personal value as it is, or ask whether it is empty:
``shareable`` reads each template's syntax tree and allows a personal value only as
``{{ value }}``, in ``or``/``and``/``if ... else`` whose result is printed, and as the test of an
``if`` or a ``not``. Anything else (a filter, a comparison, a method, ``~``, a macro, a block,
an include of a template that is not one of the partials read with them) makes the templates
unshareable, and every digest is rendered whole, as before. An included partial sees the same
context, so it is read by the same rules. Which context values are personal is found by asking
``Composer.context`` about different subscribers, so a value a template author adds is covered
without a list to keep.

A stand-in is a random letters-and-digits word, so HTML escaping and the CSS inliner leave it
as it is; a real value with a character either would change (``& < > " '``, a no-break space,
a control character) is rendered whole for that subscriber. Whether each value is empty is part
of the key, so ``{% if subscriber.name %}`` takes the same branch as it would. Finally, the
first digest made from each shared render is also rendered whole and compared: a difference
turns sharing off for this composer (logged), so a case the analysis missed costs speed,
never a wrong message.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jinja2 import nodes

from service.model import Article, Frequency, Subscriber

if TYPE_CHECKING:  # compose.py makes the SharedRenders of each Composer
    from service.mail.compose import Composer

Texts = tuple[str, str, str]  # subject, plain text, HTML (CSS inlined)

__all__ = ["SharedRenders", "plain", "shareable"]

log = logging.getLogger("bantin.digest")

CACHE = 64  # shared renders kept: distinct article sets (category choices) times moments
_PERSON_STRINGS = ("email", "name", "key")  # what a template may print of ``subscriber``
_PERSON_TESTS = ("categories",)  # what it may only test for emptiness
_PERSON_SHARED = ("frequency",)  # the same for everyone in one cache entry
_VALUE_FLOWS = (nodes.Or, nodes.And, nodes.CondExpr)  # the value of a child may be the result
# statements that move output around (or read other templates) where a stand-in's use
# cannot be seen from the syntax tree: a template with one is not shared
_OPAQUE = (
    nodes.Macro,
    nodes.CallBlock,
    nodes.FilterBlock,
    nodes.AssignBlock,
    nodes.Block,
    nodes.Extends,
    nodes.Import,
    nodes.FromImport,
    nodes.ScopedEvalContextModifier,
    nodes.EvalContextModifier,
)


def plain(value: str) -> bool:
    """True if HTML escaping and the CSS inliner's parsing and serializing leave ``value`` as is."""
    return value.isprintable() and not any(c in value for c in "&<>\"'\xa0")


def _parents(tree: nodes.Node) -> dict[int, nodes.Node]:
    found: dict[int, nodes.Node] = {}
    stack = [tree]
    while stack:
        node = stack.pop()
        for child in node.iter_child_nodes():
            found[id(child)] = node
            stack.append(child)
    return found


def _personal_leaves(
    tree: nodes.Node, strings: frozenset[str]
) -> list[tuple[nodes.Node, bool]] | None:
    """Each use of a personal value: (node, whether only its emptiness may be used); None if a
    use is of a kind that cannot be shared (``subscriber`` whole, or an attribute not known)."""
    leaves: list[tuple[nodes.Node, bool]] = []
    parents = _parents(tree)
    for name in tree.find_all(nodes.Name):
        if name.name in strings:
            leaves.append((name, False))
        elif name.name == "subscriber":
            parent = parents.get(id(name))
            if not isinstance(parent, nodes.Getattr):
                return None
            if parent.attr in _PERSON_STRINGS:
                leaves.append((parent, False))
            elif parent.attr in _PERSON_TESTS:
                leaves.append((parent, True))
            elif parent.attr not in _PERSON_SHARED:
                return None
    return leaves


def shareable(
    tree: nodes.Template, strings: frozenset[str], partials: frozenset[str] = frozenset()
) -> bool:
    """Whether every personal value in ``tree`` is only printed as it is or tested for
    emptiness (see the module); ``strings`` are the context names of personal strings, and
    ``partials`` the templates it may include (read by the same rules by the caller)."""
    if any(True for _ in tree.find_all(_OPAQUE)):
        return False
    for include in tree.find_all(nodes.Include):
        named = include.template
        if not (isinstance(named, nodes.Const) and named.value in partials):
            return False
    leaves = _personal_leaves(tree, strings)
    if leaves is None:
        return False
    parents = _parents(tree)
    for leaf, test_only in leaves:
        node = leaf
        parent = parents.get(id(node))
        # climb while the value may be passed on as the result of or/and/if-else
        while isinstance(parent, _VALUE_FLOWS) and not (
            isinstance(parent, nodes.CondExpr) and parent.test is node
        ):
            node, parent = parent, parents.get(id(parent))
        if isinstance(parent, nodes.Output) and not test_only:
            continue  # printed as it is
        if isinstance(parent, nodes.If | nodes.CondExpr) and parent.test is node:
            continue  # tested for emptiness
        if isinstance(parent, nodes.Not):
            continue
        return False
    return True


@dataclass(frozen=True, slots=True)
class _Person:
    """What the templates see of a subscriber in a shared render: stand-ins and emptiness."""

    email: str | None
    name: str | None
    key: str | None
    frequency: Frequency
    categories: frozenset[str] | None


@dataclass(slots=True)
class _Shared:
    """One shared render: its three texts with stand-ins, and whether it was checked."""

    subject: str
    text: str
    html: str
    checked: bool = False


_Key = tuple[Any, ...]


class SharedRenders:
    """The shared renders of one Composer (see the module); ``render`` gives None where a
    digest must be rendered whole."""

    def __init__(
        self,
        composer: Composer,
        names: Sequence[str],
        html_budget: int,
        partials: Sequence[str] = (),
    ) -> None:
        self.composer = composer
        self.names = tuple(names)  # subject, text, html templates
        self.partials = tuple(partials)  # templates they include
        self.html_budget = html_budget  # bytes; a digest over it is rendered whole, shorter
        self.enabled = True
        self._word = "x" + secrets.token_hex(8)  # the stand-ins are this and a number
        self._pattern = re.compile(re.escape(self._word) + r"n\d+z")
        self._plans: dict[tuple[object, ...], bool] = {}
        self._cache: OrderedDict[_Key, _Shared] = OrderedDict()
        self._strings: frozenset[str] | None = None  # personal context names, once probed
        # inside ``pinned``: [] until the templates are looked up, then [the templates]
        self._pinned: list[tuple[object, ...]] | None = None
        self.hits = 0  # digests made from a shared render (for tests and benchmarks)
        self.made = 0  # shared renders made (each also rendered whole once, to check it)

    def render(
        self,
        subscriber: Subscriber,
        articles: Sequence[Article],
        frequency: Frequency,
        now: datetime,
        whole: Callable[[], Texts],
    ) -> Texts | None:
        """``subscriber``'s digest from a shared render, or None when it must be rendered whole.
        ``whole`` renders it whole: called once per shared render, to check it."""
        if not self.enabled:
            return None
        templates = self._templates()
        strings = self._personal_strings(frequency, now)
        if strings is None or not self._plan(templates, strings):
            return None
        context = self.composer.context(subscriber, articles, frequency, now)
        values: dict[str, str] = {}
        shape: list[object] = []

        def stand_in(value: object) -> str | None:
            """A stand-in for a non-empty personal string; empty ones are used as they are."""
            if value is None or value == "":
                shape.append(value)
                return None if value is None else ""
            if not isinstance(value, str) or not plain(value):
                raise _Whole
            word = f"{self._word}n{len(values)}z"
            values[word] = value
            shape.append(True)
            return word

        try:
            for name in sorted(strings):
                context[name] = stand_in(context[name])
            person = context["subscriber"]
            their_email, their_name, their_key = (
                stand_in(getattr(person, a)) for a in _PERSON_STRINGS
            )
            context["subscriber"] = _Person(
                their_email,
                their_name,
                their_key,
                frequency=person.frequency,
                categories=frozenset("x") if person.categories else person.categories,
            )
        except _Whole:
            return None
        # the categories themselves: values made from them (a category subscriber's own
        # feeds) are the same for everyone in one entry, and need no stand-in
        shape.append(person.categories)
        key = (templates, tuple(articles), frequency, now, person.frequency, tuple(shape))
        shared = self._cache.get(key)
        if shared is None:
            shared = self._make(context, values)
            if shared is None:
                return None
            self._cache[key] = shared
            self.made += 1
            if len(self._cache) > CACHE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        rendered = self._fill(shared, values)
        if rendered is None:
            return None
        if not shared.checked:
            expected = whole()
            if rendered != expected:
                self.enabled = False
                self._cache.clear()
                log.warning(
                    "digests are rendered whole from now on: a shared render differed from the "
                    "whole one for %s (the templates use a personal value in a way not foreseen)",
                    subscriber.email,
                )
                return expected
            shared.checked = True
        self.hits += 1
        return rendered

    @contextmanager
    def pinned(self) -> Iterator[None]:
        """Within it, the templates are looked up once, at the first digest, not for each.

        Looking them up checks each file for an edit (auto_reload): five stats and lookups
        cost ~0.1 ms, a sixth of composing a digest from a shared render. A group of messages
        composed at one moment uses it; an operator's edit reaches the next group.
        """
        self._pinned = []
        try:
            yield
        finally:
            self._pinned = None

    def _templates(self) -> tuple[object, ...]:
        pinned = self._pinned
        if pinned:
            return pinned[0]
        env = self.composer.templates.env
        # the partials too: an edited partial is a new Template object, and a new plan
        templates = tuple(env.get_template(n) for n in (*self.names, *self.partials))
        if pinned is not None:  # a template that fails to load is looked up again next time
            pinned.append(templates)
        return templates

    def _personal_strings(self, frequency: Frequency, now: datetime) -> frozenset[str] | None:
        """The context names whose values differ between subscribers of the same categories,
        all strings but ``subscriber`` itself; None if one is something else (then nothing is
        shared)."""
        if self._strings is None:
            # the same categories: they are part of the cache's key (see ``render``)
            probes = [
                Subscriber("a@a.example", "A", frequency, None),
                Subscriber("b@b.example", None, frequency, None),
                Subscriber("c@c.example", "C", frequency, None),
            ]
            contexts = [self.composer.context(p, [], frequency, now) for p in probes]
            differ = {
                k for k in contexts[0] if any(c[k] != contexts[0][k] for c in contexts[1:])
            } - {"subscriber"}
            if any(not isinstance(c[k], str) for c in contexts for k in differ):
                self.enabled = False
                return None
            self._strings = frozenset(differ)
        return self._strings

    def _plan(self, templates: tuple[object, ...], strings: frozenset[str]) -> bool:
        plan = self._plans.get(templates)
        if plan is None:
            env = self.composer.templates.env
            names = (*self.names, *self.partials)
            try:
                trees = [env.parse(env.loader.get_source(env, n)[0]) for n in names]  # type: ignore[union-attr]
            except Exception:  # the whole render reports the template's problem
                return False
            partials = frozenset(self.partials)
            plan = all(shareable(tree, strings, partials) for tree in trees)
            self._plans = {templates: plan}  # templates edited: the older plans go
        return plan

    def _make(self, context: dict[str, Any], values: dict[str, str]) -> _Shared | None:
        composer = self.composer
        subject_name, text_name, html_name = self.names
        try:
            raw = composer.templates.render(html_name, **context)
            html = composer.inliner.inline(raw)
            subject = composer.templates.render(subject_name, **context)
            text = composer.templates.render(text_name, **context)
        except Exception:  # the whole render raises it, with the template's name
            return None
        words = self._pattern.findall
        if sorted(words(raw)) != sorted(words(html)):
            return None  # the inliner changed a stand-in (one inside <style>): not shareable
        return _Shared(subject, text, html)

    def _fill(self, shared: _Shared, values: dict[str, str]) -> Texts | None:
        def put(text: str) -> str:
            return self._pattern.sub(lambda m: values[m.group(0)], text) if values else text

        html = put(shared.html)
        if len(html.encode("utf-8")) > self.html_budget:
            return None  # rendered whole, with fewer articles
        subject = " ".join(put(shared.subject).split())
        if not subject:
            return None  # the whole render says why
        return subject, put(shared.text), html


class _Whole(Exception):
    """A personal value that cannot be put in afterwards: render this digest whole."""
