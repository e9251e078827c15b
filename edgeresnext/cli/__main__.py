"""``python -m edgeresnext.cli``."""

import sys

from edgeresnext.cli import main

sys.exit(main())
