"""``python -m nncompress.cli``."""

import sys

from nncompress.cli.main import main

sys.exit(main())
