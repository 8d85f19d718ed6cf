"""``python -m edge_runtime.cli``: the same as the ``lvm-edge`` command."""
import sys

from edge_runtime.cli import main

sys.exit(main())
