"""Reading the subscription form (pure): its fields to the subscriber they ask for, with what
is wrong in them, each message in the words the form shows.

Every field is bounded: one value each (the categories excepted), an address of at most 254
characters that is one (syntax only), a name of at most MAX_NAME characters on one line,
frequencies and categories from the lists offered, and the consent text's version the page was
built with (a page older than the text is shown again with the new one).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence

from service.content.markup import clean_text
from service.mail.subscribers import check_address
from service.model import FREQUENCIES, Category, SignupForm, Subscriber, consent_version

__all__ = [
    "HONEYPOT",
    "MAX_NAME",
    "Fields",
    "choice_errors",
    "client_group",
    "many",
    "mask",
    "one",
    "read_form",
    "stored_categories",
]

MAX_NAME = 100  # characters of a name
MAX_VALUES = 200  # values a form may carry in all; ours has a handful plus one per category
HONEYPOT = "website"  # hidden from people (and screen readers); robots fill it in
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")

Fields = Mapping[str, Sequence[str]]


def mask(email: str) -> str:
    """``email`` fit for a log line: ``h***@example.org``."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def client_group(ip: str) -> str:
    """What a rate limit counts as one client: an IPv4 address, or an IPv6 /64 (one host gets a
    whole /64 and could otherwise step through it)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def one(fields: Fields, name: str) -> str:
    """The first value of field ``name`` ("" if absent)."""
    values = fields.get(name) or []
    return values[0] if values else ""


def many(fields: Fields, name: str) -> list[str]:
    """Every value of field ``name``."""
    return list(fields.get(name) or [])


def choice_errors(
    frequency: str, chosen: Sequence[str], categories: Sequence[Category]
) -> dict[str, str]:
    """What is wrong with a frequency and the categories ticked, field -> message."""
    errors: dict[str, str] = {}
    if frequency not in FREQUENCIES:
        errors["frequency"] = "Hãy chọn một tần suất nhận bản tin."
    known = {c.slug for c in categories}
    if len(chosen) > len(known) or any(c not in known for c in chosen):
        errors["categories"] = "Có chuyên mục không còn trong danh sách; hãy chọn lại."
    return errors


def stored_categories(
    chosen: Sequence[str], categories: Sequence[Category], allowlisted: bool
) -> frozenset[str] | None:
    """What is stored: the slugs ticked; none ticked means every category, which is every one
    offered when the operators list them (the form offers nothing else)."""
    if chosen:
        return frozenset(chosen)
    return frozenset(c.slug for c in categories) if allowlisted else None


def read_form(
    fields: Fields,
    categories: Sequence[Category],
    consent: str,
    allowlist: Sequence[str] | None,
) -> tuple[Subscriber | None, SignupForm]:
    """The subscriber a submission asks for, and the form to show again with what is wrong
    (``form.errors``, field -> message; empty when the submission is good)."""
    email = one(fields, "email").strip()
    name = one(fields, "name")
    frequency = one(fields, "frequency") or "daily"
    chosen = many(fields, "categories")
    errors: dict[str, str] = {}
    total = sum(len(v) for v in fields.values())
    if total > MAX_VALUES or any(len(v) > 1 for k, v in fields.items() if k != "categories"):
        errors["form"] = "Biểu mẫu gửi lên không đúng; hãy tải lại trang và thử lại."
    if not email:
        errors["email"] = "Hãy nhập địa chỉ email."
    elif check_address(email) is not None:
        errors["email"] = "Địa chỉ email này không đúng; hãy viết như ten@example.org."
    if len(name) > MAX_NAME or _CONTROL.search(name):
        errors["name"] = f"Họ tên dài tối đa {MAX_NAME} ký tự, trên một dòng."
    errors.update(choice_errors(frequency, chosen, categories))
    if one(fields, "v") != consent_version(consent):
        errors["consent"] = (
            "Nội dung đồng ý vừa được cập nhật; hãy đọc lại bên dưới rồi bấm Đăng ký."
        )
    known = {c.slug for c in categories}
    form = SignupForm(
        tuple(categories),
        consent,
        consent_version(consent),
        chosen=frozenset(c for c in chosen if c in known),
        frequency=frequency if frequency in FREQUENCIES else "daily",
        email=email[:254],
        name=name[:MAX_NAME],
        errors=errors,
    )
    if errors:
        return None, form
    subscriber = Subscriber(
        email,
        clean_text(name).strip() or None,
        frequency,  # type: ignore[arg-type]
        stored_categories(chosen, categories, allowlist is not None),
    )
    return subscriber, form
