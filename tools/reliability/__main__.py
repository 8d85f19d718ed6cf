import sys

from tools.reliability.cli import main

sys.exit(main())
