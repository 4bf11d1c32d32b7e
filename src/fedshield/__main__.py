"""``python -m fedshield …`` = the ``fedshield`` command."""

import sys

from .cli import main

sys.exit(main())
