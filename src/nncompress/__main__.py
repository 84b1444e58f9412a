"""``python -m nncompress``: the command line."""

import sys

from nncompress.cli.main import main

sys.exit(main())
