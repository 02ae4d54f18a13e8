"""``python -m pcbook.workbook``: the workbook's command line (pcbook/workbook/cli.py)."""

import sys

from pcbook.workbook.cli import main

sys.exit(main())
