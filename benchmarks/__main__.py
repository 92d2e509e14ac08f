"""python -m benchmarks: see benchmarks/suite.py."""

import sys

from .suite import main

sys.exit(main())
