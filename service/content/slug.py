"""URL slugs and categories: "Lịch tiếp công dân" -> lich-tiep-cong-dan (pure).

Articles, category pages and subscribers' category filters all name a category by the slug
made here, so one function decides it for all of them.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

from slugify import slugify, smart_truncate

from service.model import Category

__all__ = ["SLUG_MAX", "category", "make_slug", "offered"]

# A slug is a directory name under the output directory: long ones hit the file system's
# 255-byte name limit and would stop the whole build, so they are cut at a word boundary.
SLUG_MAX = 100
_D = str.maketrans({"đ": "d", "Đ": "D"})
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_NUMBER_COMMA = re.compile(r"(?<=\d),(?=\d)")  # "1,5" -> "15", as python-slugify does


def make_slug(text: str) -> str:
    """A Vietnamese-aware URL slug ("Lịch tiếp công dân" -> "lich-tiep-cong-dan"), capped.

    Latin text (Vietnamese included) takes a direct path: python-slugify searches the import
    path on every call (~150 µs), which was a fifth of a cold build. Other scripts still go
    through python-slugify's transliteration.
    """
    stripped = "".join(
        c for c in unicodedata.normalize("NFKD", text.translate(_D)) if not unicodedata.combining(c)
    )
    if not stripped.isascii() or "&" in stripped:  # other scripts, HTML entities
        return slugify(text, max_length=SLUG_MAX, word_boundary=True)
    slug = _NOT_SLUG.sub("-", _NUMBER_COMMA.sub("", stripped.lower())).strip("-")
    return smart_truncate(slug, SLUG_MAX, word_boundary=True, separator="-")


@functools.lru_cache(maxsize=1024)
def category(name: str) -> Category:
    """The category named ``name``, with its slug ("khac" when nothing of the name is left)."""
    return Category(name=name, slug=make_slug(name) or "khac")


def offered(allowlist: Sequence[str] | None, known: Sequence[Category]) -> tuple[Category, ...]:
    """The categories the subscription form offers: those ``allowlist`` names (names or slugs,
    in its order, named as the articles name them), else every ``known`` one by name."""
    if allowlist is None:
        return tuple(sorted(known, key=lambda c: c.name.casefold()))
    names = {c.slug: c.name for c in known}
    chosen: dict[str, Category] = {}
    for entry in allowlist:
        slug = category(entry).slug
        chosen.setdefault(slug, Category(names.get(slug, entry), slug))
    return tuple(chosen.values())
