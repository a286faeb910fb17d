"""The articles directory -> Articles.

slug (URL slugs, categories), markup (clean text, sanitised HTML), parse (one file's text to
an Article), scan (the resolved set and what is published when: pure), source (the walk of
the directory, cheap rescans).

May import: the core (model, errors, workers). Never publish, mail, ledger, serve, runtime, cli.
"""
