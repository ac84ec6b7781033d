"""``python -m services.jobs --job-id N`` (what a Ray job runs) or ``--dataset URI``."""

import sys

from services.jobs.entrypoint import main

sys.exit(main())
