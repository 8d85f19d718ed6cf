"""``python -m edge_runtime.cli``: the same as the ``lvm-edge`` command."""
import sys

from edge_runtime.cli import main

if __name__ == "__main__":  # importing the module (e.g. walking the package) must not run the CLI
    sys.exit(main())
