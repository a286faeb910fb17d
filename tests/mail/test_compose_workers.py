"""Composing in worker processes gives the very bytes composing inline gives."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.content.slug import category
from service.ledger import State
from service.mail import compose_workers as pool
from service.mail.compose import Composer
from service.mail.run import DigestRun
from service.mail.subscribers import read_entries
from service.mail.transport import FileTransport
from service.model import Article
from service.settings import load_settings

NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
COUNT = pool.INLINE + 30  # past the inline start, so the pool composes some


def articles() -> list[Article]:
    return [
        Article(
            id=f"tin-{i}",
            slug=f"tin-{i}",
            title=f"Lịch tiếp công dân số {i}",
            date=datetime(2026, 11, 20 + i, tzinfo=UTC),
            category=category("Lịch tiếp công dân"),
            summary=f"Tóm tắt {i}.",
            content_html=f"<p>{i}</p>",
            source=f"tin-{i}.md",
        )
        for i in range(3)
    ]


def run_once(directory: Path, processes: int) -> dict[str, bytes]:
    directory.mkdir()
    config = directory / "bantin.toml"
    config.write_text(
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        f'templates_dir = "{Path.cwd() / "templates"}"\n'
        f'[state]\nurl = "sqlite:///{directory}/state.db"\n'
        f'[mail]\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
        f'subscribers_file = "{directory}/subscribers.toml"\noutbox_dir = "{directory}/outbox"\n',
        encoding="utf-8",
    )
    (directory / "subscribers.toml").write_text(
        "".join(
            f'[[subscriber]]\nemail = "nguoi{i}@example.org"\nname = "Người {i}"\n'
            for i in range(COUNT)
        ),
        encoding="utf-8",
    )
    settings = load_settings(config)
    state = State(settings.state.url)
    try:
        # everyone is known before the articles appear, so every one of them is news
        entries = [e.subscriber for e in read_entries(settings.mail.subscribers_file)]
        state.subscribers.sync([s for s in entries if s is not None], NOW)
        composer = Composer(settings, b"key")
        run = DigestRun(
            state,
            composer,
            FileTransport(settings.mail.outbox_dir),
            "daily",
            articles(),
            read_entries(settings.mail.subscribers_file),
            processes=processes,
            clock=lambda: NOW,
        )
        report = asyncio.run(run.run())
    finally:
        state.close()
    assert report.sent == COUNT, report.summary()
    composed_inline = run.composers.inline_count
    assert composed_inline == (COUNT if processes == 0 else pool.INLINE)
    return {p.name.split("-", 4)[-1]: p.read_bytes() for p in (directory / "outbox").glob("*.eml")}


@pytest.mark.usefixtures("project")
def test_worker_processes_compose_the_same_messages(tmp_path: Path) -> None:
    inline = run_once(tmp_path / "inline", processes=0)
    pooled = run_once(tmp_path / "pooled", processes=1)
    assert len(inline) == COUNT
    assert inline == pooled
