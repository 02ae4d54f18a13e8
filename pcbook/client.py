"""``python -m pcbook.client``: the tutorial's client (the code lives in pcbook/service/client.py)."""

import sys

from pcbook.service.client import main

if __name__ == "__main__":
    sys.exit(main())
