"""make_slug's direct path for Latin text gives exactly what python-slugify gives."""

from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st
from slugify import slugify

from service.content.slug import SLUG_MAX, make_slug

VIETNAMESE = "ăâđêôơưáàảãạắằẳẵặấầẩẫậéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵĐĂÂÊÔƠƯ"


@settings(max_examples=400, deadline=None)
@given(
    st.text(alphabet=string.ascii_letters + string.digits + " -_.,:;'&!?()" + VIETNAMESE)
    | st.lists(st.sampled_from(["tiếp", "công", "dân", "0,5", "Đ", "x" * 30]), max_size=40).map(
        " ".join
    )
)
def test_fast_slug_matches_python_slugify(text: str) -> None:
    assert make_slug(text) == slugify(text, max_length=SLUG_MAX, word_boundary=True)


def test_vietnamese_examples() -> None:
    assert make_slug("Lịch tiếp công dân") == "lich-tiep-cong-dan"
    assert make_slug("ĐẠI HỘI Đảng bộ") == "dai-hoi-dang-bo"
    assert make_slug("Thông báo: nghỉ Tết Dương lịch năm 2027") == (
        "thong-bao-nghi-tet-duong-lich-nam-2027"
    )


def test_other_scripts_are_transliterated() -> None:
    assert make_slug("北京 news") == slugify("北京 news", max_length=SLUG_MAX, word_boundary=True)
    assert make_slug("北京 news") != "news"
