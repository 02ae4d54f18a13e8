"""Start Python in a user + network namespace of its own, for a test worker of a user who is not root.

    python tests/userns_python.py -u -c "..."     # what xdist runs for a worker (isolation.worker_spec)

unshare(CLONE_NEWUSER) works only in a single-threaded process, so it happens here, before the worker's
Python (and its threads) start: then exec, with the same arguments. See tests/isolation.py.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import isolation  # noqa: E402

isolation.enter_user_network()
os.environ[isolation.USERNS_ENV] = "1"
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
