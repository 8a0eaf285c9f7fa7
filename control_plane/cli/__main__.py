"""`python -m control_plane.cli` is the `weir` command."""

import sys

from .main import main

sys.exit(main())
