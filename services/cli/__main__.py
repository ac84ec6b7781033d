"""``python -m services.cli``: the ``colecionador`` command."""

import sys

from services.cli import main

sys.exit(main())
