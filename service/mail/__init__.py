"""Subscribers -> messages: who gets what, the message they get, and getting it to them.

subscribers (the operators' file, streamed), news (who gets what: one rule for runs, dry runs
and previews), compose (the email templates rendered), mime (header values, MIME bytes, DKIM,
Message-ID), compose_workers (composing in worker processes), transport (SMTP, file outbox,
memory), replies (whom an SMTP failure concerns), outcomes (what each outcome does to the
ledger), run (a digest run, and ``run_digest`` that the CLI and the service both call), tokens
(signed unsubscribe links), verp (signed return paths), bounces (what a bounce, complaint or
auto-reply says), mailboxes (the Maildir and IMAP folders bounces wait in), pace (a sending rate
the relay accepts).

May import: the core, content (slugs, text clean-up) and the ledger. Never publish, serve,
runtime, cli.
"""
