"""HTTP: the routes (app), the output directory's files (static), the subscription pages
(signup), and the server's lifecycle.

May import: the core, publish.layout (file names), mail.tokens (unsubscribe links). Never the
ledger, runtime or cli: the service hands the app callables (and the subscription desk) for
what it needs from them.
"""
