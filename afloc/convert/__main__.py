"""``python -m afloc.convert``: see :mod:`afloc.convert.converter`."""

import sys

from .converter import main

sys.exit(main())
