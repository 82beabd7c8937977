"""``python -m app``: the same entry point as the ``quantdesk`` command."""

import sys

from app.cli.main import main

sys.exit(main())
