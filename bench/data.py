"""Generated benchmark data: an articles tree, a subscribers file and a project to run bantin in.

Everything is deterministic (seeded) so two runs measure the same bytes: Vietnamese titles,
~3 KB Markdown bodies with front matter, nested ``YYYY/MM/`` directories, a dozen categories.
"""

from __future__ import annotations

import os
import random
import shutil
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CATEGORIES = [
    "Thông báo",
    "Lịch tiếp công dân",
    "Tin tức - Sự kiện",
    "Chỉ đạo điều hành",
    "Văn bản pháp luật",
    "Đầu tư - Đấu thầu",
    "Tuyển dụng",
    "Y tế - Giáo dục",
    "Nông nghiệp",
    "Giao thông",
    "Văn hóa - Du lịch",
    "Cải cách hành chính",
]
AUTHORS = [
    "Văn phòng UBND tỉnh",
    "Sở Nội vụ",
    "Sở Tài chính",
    "Ban Tiếp công dân tỉnh",
    "Sở Giáo dục và Đào tạo",
    "Sở Y tế",
]
SUBJECTS = [
    "tổ chức tiếp công dân định kỳ",
    "triển khai kế hoạch chuyển đổi số",
    "điều chỉnh giờ làm việc mùa hè",
    "phòng chống thiên tai và tìm kiếm cứu nạn",
    "tuyển dụng viên chức sự nghiệp giáo dục",
    "lấy ý kiến dự thảo nghị quyết",
    "đấu giá quyền sử dụng đất",
    "kết quả phiên họp thường kỳ",
    "nghỉ Tết Nguyên đán",
    "tiêm chủng mở rộng cho trẻ em",
    "cải cách thủ tục hành chính",
    "bảo đảm trật tự an toàn giao thông",
]
_WORDS = (
    "ủy ban nhân dân tỉnh thông báo về việc triển khai thực hiện các nhiệm vụ trọng tâm "
    "trong tháng các sở ban ngành đoàn thể cấp tỉnh và ủy ban nhân dân các huyện thành phố "
    "căn cứ chức năng nhiệm vụ được giao chủ động phối hợp tổ chức thực hiện nghiêm túc "
    "hiệu quả đúng quy định công dân đến trình bày khiếu nại tố cáo kiến nghị phản ánh "
    "mang theo giấy tờ tùy thân và các tài liệu liên quan mọi thắc mắc xin liên hệ "
    "văn phòng tiếp công dân điện thoại hộp thư điện tử cổng thông tin điện tử của tỉnh "
    "đẩy mạnh chuyển đổi số nâng cao chất lượng dịch vụ công trực tuyến toàn trình"
)
WORDS = _WORDS.split(" ")


def _paragraph(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def article_text(rng: random.Random, number: int, when: datetime, body_bytes: int = 3000) -> str:
    """One article file: YAML front matter and a Markdown body of about ``body_bytes``."""
    subject = rng.choice(SUBJECTS)
    title = f"Thông báo số {number}/TB-UBND về việc {subject}"
    category = rng.choice(CATEGORIES)
    parts = [
        f"Thực hiện chỉ đạo của **Chủ tịch UBND tỉnh**, {_paragraph(rng, 25).lower()}",
        f"- {_paragraph(rng, 10)}\n- {_paragraph(rng, 12)}\n- {_paragraph(rng, 8)}",
    ]
    while len("\n\n".join(parts).encode()) < body_bytes - 200:
        parts.append(_paragraph(rng, rng.randint(30, 60)))
    parts.append(f"Chi tiết xem tại [văn bản gốc](https://example.gov.vn/van-ban/{number}).")
    summary = _paragraph(rng, 20)
    return (
        "---\n"
        f"title: {title}\n"
        f"date: {when.strftime('%Y-%m-%dT%H:%M:00+07:00')}\n"
        f"category: {category}\n"
        f"author: {rng.choice(AUTHORS)}\n"
        f"summary: {summary}\n"
        "---\n" + "\n\n".join(parts) + "\n"
    )


def write_articles(root: Path, count: int, seed: int = 5, start_number: int = 1) -> list[Path]:
    """``count`` articles under ``root/YYYY/MM/``, dated one every ~2 hours back from 2026-11."""
    rng = random.Random(seed)
    newest = datetime(2026, 11, 20, 8, 0)
    step = timedelta(minutes=max(10, int(10 * 365 * 24 * 60 / max(count, 1))))
    paths = []
    made: set[Path] = set()
    for i in range(count):
        number = start_number + i
        when = newest - step * i
        directory = root / f"{when.year}" / f"{when.month:02d}"
        if directory not in made:
            directory.mkdir(parents=True, exist_ok=True)
            made.add(directory)
        path = directory / f"thong-bao-{number}.md"
        path.write_text(article_text(rng, number, when), encoding="utf-8")
        paths.append(path)
    return paths


def touch_article(path: Path, generation: int) -> None:
    """Edit one article (a line added to its body) so its size and mtime change."""
    text = path.read_text(encoding="utf-8")
    text += f"\nCập nhật lần {generation}: bổ sung thông tin cho công dân.\n"
    path.write_text(text, encoding="utf-8")
    stamp = os.stat(path).st_mtime_ns + 1_000_000 * generation
    os.utime(path, ns=(stamp, stamp))


GIVEN = ["Hoa", "Tuấn", "Lan", "Minh", "Hương", "Dũng", "Thảo", "Quang", "Ngọc", "Phương"]
FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Đặng", "Bùi", "Đỗ", "Hồ"]
MIDDLE = ["Thị", "Văn", "Đức", "Thu", "Minh", "Hữu"]


def write_subscribers(path: Path, count: int, frequency: str = "daily") -> None:
    """``count`` subscribers of every category, Vietnamese names, one ``[[subscriber]]`` each."""
    rng = random.Random(count)
    with path.open("w", encoding="utf-8") as file:
        file.write("# generated by bench/data.py\n")
        for i in range(count):
            name = f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
            file.write(
                f'\n[[subscriber]]\nemail = "nguoi.dung.{i}@example.org"\n'
                f'name = "{name}"\nfrequency = "{frequency}"\n'
            )


def make_project(
    directory: Path,
    content: Path,
    *,
    smtp_port: int = 2525,
    http_port: int = 8080,
    subscribers: Path | None = None,
    scan_interval: int = 60,
    transport: str = "smtp",
    feed_items: int = 50,
) -> Path:
    """A project directory (config, templates, var/) around ``content``; returns the config."""
    directory.mkdir(parents=True, exist_ok=True)
    templates = directory / "templates"
    if not templates.exists():
        shutil.copytree(REPO / "templates", templates)
    (directory / "var").mkdir(exist_ok=True)
    config = directory / "bantin.toml"
    subscribers = subscribers or directory / "subscribers.toml"
    if not subscribers.exists():
        write_subscribers(subscribers, 1)
    config.write_text(
        "[site]\n"
        'title = "Cổng thông tin điện tử tỉnh Lai Châu"\n'
        'base_url = "https://laichau.example.gov.vn"\n'
        'author = "Văn phòng UBND tỉnh Lai Châu"\n'
        'description = "Tin tức, thông báo và lịch tiếp công dân"\n'
        f'templates_dir = "{templates}"\n'
        "[source]\n"
        f'dir = "{content}"\n'
        "[feeds]\n"
        f'output_dir = "{directory / "public"}"\n'
        f"max_items = {feed_items}\n"
        "[state]\n"
        f'url = "sqlite:///{directory / "var" / "bantin.db"}"\n'
        "[schedule]\n"
        f"scan_interval = {scan_interval}\n"
        "[mail]\n"
        'from = "Văn phòng UBND tỉnh <bantin@laichau.example.gov.vn>"\n'
        f'subscribers_file = "{subscribers}"\n'
        f'transport = "{transport}"\n'
        f'outbox_dir = "{directory / "var" / "outbox"}"\n'
        "[smtp]\n"
        'host = "127.0.0.1"\n'
        f"port = {smtp_port}\n"
        'security = "none"\n'
        "timeout = 30\n"
        "concurrency = 4\n"
        "[server]\n"
        'host = "127.0.0.1"\n'
        f"port = {http_port}\n"
        'secret_key = "bench-secret-key-not-for-production"\n',
        encoding="utf-8",
    )
    return config
