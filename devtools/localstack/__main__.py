"""Entry point of ``python -m devtools.localstack``."""

import sys

from devtools.localstack.cli import main

if __name__ == "__main__":
    sys.exit(main())
