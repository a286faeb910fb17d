"""Articles -> files: feeds, pages, and the output directory they are written to.

layout (file names under the output directory), feeds (RSS, Atom, JSON Feed bytes), pages
(HTML from the operators' templates), output (atomic writes, stale files removed), build (what
to render after a scan, rendering only what changed), websub (hub pings).

May import: the core and content. Never mail, ledger, serve, runtime, cli.
"""
