"""The daemon, `bantin run`: its lifecycle (service), live configuration (reload), health,
and when things run (schedule, on APScheduler with cron translated).

May import everything below it: the core, content, publish, mail, ledger, serve. Never cli.
"""
