"""``python -m daemon`` runs the ``yomitori`` command line."""

from __future__ import annotations

import sys

from daemon.cli import main

if __name__ == "__main__":
    sys.exit(main())
