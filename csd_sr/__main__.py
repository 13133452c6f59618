"""``python -m csd_sr ...``: the ``csd-sr`` command (also under ``torchrun -m csd_sr train ...``)."""

import sys

from csd_sr.cli import main

sys.exit(main())
