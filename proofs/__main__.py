"""Entry point of ``python -m proofs``: print the proof report (see :mod:`proofs.report`)."""

import sys

from proofs.report import main

sys.exit(main())
