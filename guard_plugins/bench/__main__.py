"""``python -m guard_plugins.bench`` — the same as ``guard-plugins bench``."""

import sys

from guard_plugins.bench.cli import main

sys.exit(main())
