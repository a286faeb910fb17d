"""The ledger: what bantin has seen and sent, in one database (SQLite by default).

schema (the tables), db (the engine, transactions, driver-level statements), one module per
noun: articles (sequence numbers), subscribers (cursors, unsubscriptions, suspensions),
deliveries (one row per message, committed before it is sent), claims (runs in progress and
the batches of their deliveries that hosts take), runs (the last run of each job), keys (the
generated signing key, the salt of stored hashes), suppressions (addresses not mailed: bounces,
complaints), signups (self-service subscribers and their consent), throttles (the form's rate
limits), erasure (`bantin forget`); lock (one runner per state: a file, or a leader on
PostgreSQL); migrations (the schema's history).

``State`` (state.py) opens the database and offers each noun as an attribute:
``state.articles.record()``. It is imported from here when first asked for, so that a command
that needs one noun (`bantin build` reads the articles' identities: db and articles) does not
import them all.

May import: the core (model, errors). Never content, publish, mail, serve, runtime, cli.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.ledger.state import Leader, State

__all__ = ["Leader", "State"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from service.ledger import state

        return getattr(state, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
