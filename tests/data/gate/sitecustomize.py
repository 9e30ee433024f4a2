"""Holds one local-mesh app at interpreter start-up, before it listens, until a test lets it go.

Python imports sitecustomize from PYTHONPATH at start-up. A test that puts this directory
on PYTHONPATH and sets MESHCONF_GATE_POD (a pod name prefix) and MESHCONF_GATE_FIFO (a FIFO)
makes the app process of a matching pod block on opening the FIFO for reading, which
returns once the test opens it for writing. Every other process starts as usual.
"""

import os
import sys


def _gated_pod() -> bool:
    prefix = os.environ.get("MESHCONF_GATE_POD")
    if not prefix or "--pod" not in sys.argv[:-1]:
        return False
    return sys.argv[sys.argv.index("--pod") + 1].startswith(prefix)


if _gated_pod():
    with open(os.environ["MESHCONF_GATE_FIFO"], "rb"):
        pass
