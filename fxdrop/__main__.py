"""``python -m fxdrop``: the same as the ``fxdrop`` command."""

import sys

from .cli import main

sys.exit(main())
