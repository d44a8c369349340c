"""``python -m galmass`` == ``galmass``."""

import sys

from galmass.cli import main

sys.exit(main())
