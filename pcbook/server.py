"""``python -m pcbook.server``: the pcbook gRPC server (the code lives in pcbook/service/server.py)."""

import sys

from pcbook.service.server import main

if __name__ == "__main__":
    sys.exit(main())
