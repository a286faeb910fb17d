"""The pages a reader reaches by typing or following a link, from the real `bantin run`."""

from __future__ import annotations

from pathlib import Path

from servicekit import Bantin, article, write_atomic
from smtpserver import silent_server


def test_categories_are_listed_and_a_missing_page_leads_home(project: Path) -> None:
    with silent_server() as smtp_port:
        bantin = Bantin(project, smtp_port)
        bantin.subscribe()
        bantin.publish("Tin một")
        write_atomic(
            project / "content" / "lich.md",
            article("Lịch tiếp", "2024-05-20T08:00:00+07:00", "Lịch tiếp công dân"),
        )
        try:
            bantin.start()
            listing = bantin.get("/categories/")
            assert listing.status_code == 200
            for slug, name in (
                ("thong-bao", "Thông báo"),
                ("lich-tiep-cong-dan", "Lịch tiếp công dân"),
            ):
                assert f'/categories/{slug}/">{name}</a>' in listing.text
                assert f"/categories/{slug}/rss.xml" in listing.text
            missing = bantin.get("/khong-co/trang-nay")
            assert missing.status_code == 404
            assert "Không tìm thấy" in missing.text
            assert f'href="{bantin.url}/">Về trang chủ</a>' in missing.text
            assert "<title>Không tìm thấy trang ·" in missing.text  # the site's page, not bare
        finally:
            bantin.stop()
