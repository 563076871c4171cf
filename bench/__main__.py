"""``python -m bench``: see `bench.command`."""

import sys

from bench.command import main

sys.exit(main())
