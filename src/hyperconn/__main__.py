"""``python -m hyperconn ...``: the same as the ``hyperconn`` command."""

import sys

from .cli import main

sys.exit(main())
