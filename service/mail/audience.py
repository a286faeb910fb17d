"""Everyone a digest run mails: the operators' file, then the confirmed sign-ups of the form.

Both are streamed: the file one block at a time, the sign-ups a page of rows at a time, so a
million subscribers never sit in memory. Where both name an address the file wins: the file is
read first, each batch of its addresses is looked up among the confirmed sign-ups, and the
sign-ups found (a handful, usually) are skipped when the sign-ups' turn comes. A run that read
the whole file notes those sign-ups (``in_file``): their preferences page then says the
operators' list decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from service.ledger import State
from service.mail.subscribers import Entry

__all__ = ["BATCH", "everyone"]

BATCH = 500  # file entries looked up among the sign-ups at once


def everyone(
    state: State, entries: Iterable[Entry], *, record: bool = True, batch: int = BATCH
) -> Iterator[Entry]:
    """The file's ``entries``, then every confirmed sign-up they do not name (as entries of
    line 0). ``record``: note which sign-ups the file names (not in dry runs and previews)."""
    named: set[str] = set()
    waiting: list[Entry] = []
    for entry in entries:
        waiting.append(entry)
        if len(waiting) >= batch:
            named |= _signed_up(state, waiting)
            yield from waiting
            waiting = []
    named |= _signed_up(state, waiting)
    yield from waiting
    if record:
        state.signups.note_in_file(named)
    for signup in state.signups.confirmed():
        if signup.email not in named:
            yield Entry(0, signup.subscriber)


def _signed_up(state: State, entries: list[Entry]) -> set[str]:
    keys = [e.subscriber.key for e in entries if e.subscriber is not None]
    return state.signups.confirmed_among(keys) if keys else set()
