"""``python -m drdm`` runs the command line."""

import sys

from drdm.cli.main import main

sys.exit(main())
