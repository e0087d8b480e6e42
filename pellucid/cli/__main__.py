"""``python -m pellucid.cli``."""

import sys

from . import main

sys.exit(main())
