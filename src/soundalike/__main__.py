"""``python -m soundalike`` runs the command line."""

import sys

from soundalike.cli import main

sys.exit(main())
