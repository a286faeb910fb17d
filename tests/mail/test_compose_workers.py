"""Composing in worker processes gives the very bytes composing inline gives."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import time
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from service import workers
from service.content.slug import category
from service.ledger import State
from service.mail import compose_workers as pool
from service.mail.compose import Composer
from service.mail.run import DigestRun
from service.mail.subscribers import read_entries
from service.mail.transport import FileTransport, Outcome
from service.model import Article, Subscriber
from service.settings import load_settings

NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)
T = TypeVar("T")
COUNT = 3 * pool.INLINE  # past the inline start, so the pool composes some


class WaitingForThePool(FileTransport):
    """Sends a message composed past the inline start only once the workers are up, so that
    the messages taken after it are the pool's, however long the pool takes to start; and
    notes the longest the event loop went without running a ready task meanwhile."""

    def __init__(self, outbox: Path, run: list[DigestRun]) -> None:
        super().__init__(outbox)
        self.run = run
        self.sent = 0

    async def send(self, sender: str, recipient: str, data: bytes) -> Outcome:
        self.sent += 1
        composers = self.run[0].composers
        if self.sent > pool.INLINE and composers.processes > 0:
            for _ in range(6000):
                if composers._executor is not None:
                    break
                await asyncio.sleep(0.01)
        return await super().send(sender, recipient, data)


async def longest_stall(work: Awaitable[T]) -> tuple[T, float]:
    """``work``'s result, and the longest gap between two ticks of a 10 ms ticker beside it."""
    gaps: list[float] = []

    async def tick() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        return await work, max(gaps, default=0.0)
    finally:
        ticker.cancel()


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


def configure(directory: Path) -> Path:
    config = directory / "bantin.toml"
    config.write_text(
        '[site]\ntitle = "Cổng thông tin tỉnh"\nbase_url = "https://tinh.example.gov.vn"\n'
        f'templates_dir = "{Path.cwd() / "templates"}"\n'
        f'[state]\nurl = "sqlite:///{directory}/state.db"\n'
        f'[mail]\nfrom = "Bản tin <bantin@tinh.example.gov.vn>"\n'
        f'subscribers_file = "{directory}/subscribers.toml"\noutbox_dir = "{directory}/outbox"\n',
        encoding="utf-8",
    )
    return config


def run_once(directory: Path, processes: int) -> tuple[dict[str, bytes], float]:
    """The messages of a run, by recipient, and the longest the loop stalled meanwhile."""
    directory.mkdir()
    config = configure(directory)
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
        made: list[DigestRun] = []
        run = DigestRun(
            state,
            composer,
            WaitingForThePool(settings.mail.outbox_dir, made),
            "daily",
            articles(),
            read_entries(settings.mail.subscribers_file),
            processes=processes,
            clock=lambda: NOW,
        )
        made.append(run)
        report, stall = asyncio.run(longest_stall(run.run()))
    finally:
        state.close()
    assert report.sent == COUNT, report.summary()
    composed_inline = run.composers.inline_count
    if processes == 0:
        assert composed_inline == COUNT
    else:  # inline until the workers were up, then the pool's
        assert pool.INLINE <= composed_inline < COUNT
    messages = {
        p.name.split("-", 4)[-1]: p.read_bytes() for p in (directory / "outbox").glob("*.eml")
    }
    return messages, stall


@pytest.mark.usefixtures("project")
def test_worker_processes_compose_the_same_messages(tmp_path: Path) -> None:
    inline, _ = run_once(tmp_path / "inline", processes=0)
    pooled, _ = run_once(tmp_path / "pooled", processes=1)
    assert len(inline) == COUNT
    assert inline == pooled


@pytest.mark.usefixtures("project")
def test_workers_that_start_slowly_never_stall_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a forkserver that takes 2 s to start (1.2 s was seen on a loaded 2-core host)
    start = workers.executor

    def slow_executor(*args: Any, **kwargs: Any) -> Any:
        time.sleep(2.0)
        return start(*args, **kwargs)

    monkeypatch.setattr(workers, "executor", slow_executor)
    messages, stall = run_once(tmp_path / "slow", processes=1)
    assert len(messages) == COUNT
    assert stall < 1.0  # the 2 s were spent beside the loop, not on it


@pytest.mark.usefixtures("project")
def test_the_workers_take_messages_in_groups_each_with_its_own_outcome(tmp_path: Path) -> None:
    """Handing each message over alone cost the sending process as much as composing it: the
    workers take GROUP at a time, and a message that cannot be composed fails alone."""
    composer = Composer(load_settings(configure(tmp_path)), b"key")
    news = articles()
    jobs = [
        pool.Job(
            Subscriber(f"nguoi{i}@example.org", f"Người {i}"),
            news,
            "daily",
            f"<so-{i}@tinh.example.gov.vn>",
            NOW,
            i,
        )
        for i in range(2 * pool.GROUP + 3)
    ]
    jobs[5] = jobs[5]._replace(message_id="<so-5\nBcc: x@example.org>")  # not a header
    composers = pool.ComposeWorkers(composer, news, 1)
    composers._start_pool()  # here, rather than beside a run's first messages

    async def compose_all() -> list[bytes | BaseException]:
        return await asyncio.gather(*composers.compose_many(jobs), return_exceptions=True)

    try:
        assert composers._executor is not None, "the worker did not start"
        results = asyncio.run(compose_all())
    finally:
        composers.close()
    assert (composers.handoffs, composers.inline_count) == (3, 0)
    assert isinstance(results[5], ValueError) and "line break" in str(results[5])
    others = [job for n, job in enumerate(jobs) if n != 5]
    assert [r for n, r in enumerate(results) if n != 5] == [composer.compose(*j) for j in others]


@pytest.mark.usefixtures("project")
def test_a_group_looks_its_templates_up_once_and_the_next_group_sees_an_edit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Looking the five templates up for each message (a file check each) cost a sixth of
    composing it: a group looks them up once. An operator's edit still reaches the next group."""
    settings = load_settings(configure(tmp_path))
    news = articles()
    monkeypatch.setattr(pool, "_composer", None)
    pool._start_worker(settings, b"key", None, tuple(news))
    composer = pool._composer
    assert composer is not None
    lookups: list[str] = []
    get_template = composer.templates.env.get_template

    def counted(name: Any, *args: Any, **kwargs: Any) -> Any:
        lookups.append(name)
        return get_template(name, *args, **kwargs)

    monkeypatch.setattr(composer.templates.env, "get_template", counted)
    ids = tuple(a.id for a in news)

    def group(first: int) -> list[bytes | Exception]:
        return pool._compose_group_in_worker(
            [
                (Subscriber(f"nguoi{i}@example.org", f"Người {i}"), ids, "daily", f"<{i}@x>", NOW)
                for i in range(first, first + pool.GROUP)
            ]
        )

    group(0)  # makes the shared render
    del lookups[:]
    before = group(pool.GROUP)
    assert len(lookups) == len(composer.shared.names) + len(composer.shared.partials)
    subject = tmp_path / "templates" / "email" / "subject.txt.j2"
    subject.write_text("Sửa lúc chạy: {{ site.title }}", encoding="utf-8")
    later = subject.stat().st_mtime_ns + 10**9  # a new mtime, however coarse the clock
    os.utime(subject, ns=(later, later))
    after = group(2 * pool.GROUP)
    edited = "Sửa lúc chạy: Cổng thông tin tỉnh"
    assert edited not in subjects(before)
    assert subjects(after) == [edited] * pool.GROUP


def subjects(messages: list[bytes | Exception]) -> list[str]:
    assert all(isinstance(m, bytes) for m in messages), messages
    return [
        str(email.message_from_bytes(m, policy=email.policy.default)["Subject"])  # type: ignore[arg-type]
        for m in messages
    ]
