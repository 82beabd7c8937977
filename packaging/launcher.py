"""The bundle's entry point: the same ``main`` as the ``quantdesk`` command (GUI without
arguments, the CLI with a subcommand, and ``--run-module`` for the app's own child processes)."""

import sys

from app.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
