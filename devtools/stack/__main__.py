"""Entry point of ``python -m devtools.stack``."""

import sys

from devtools.stack.cli import main

if __name__ == "__main__":
    sys.exit(main())
