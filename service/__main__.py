"""`python -m service` runs the command line."""

from service.cli import main

# Guarded: worker processes (pool.py) re-import the main module and must not run the CLI.
if __name__ == "__main__":
    raise SystemExit(main())
