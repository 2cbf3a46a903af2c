"""``python -m shc ...``: the same as the ``shc`` command."""

import sys

from .cli import main

sys.exit(main())
