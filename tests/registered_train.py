"""``python tests/registered_train.py MODULE:FUNCTION ARGUMENTS``: train.py after FUNCTION of MODULE registers a model.

For a model a test defines, in a process of its own: Lightning starts the other ranks
of a run on several processes with this same command line, so they register it too.
"""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

module, function = sys.argv[1].split(":")
getattr(importlib.import_module(module), function)()

from zoo import train  # noqa: E402 - after the registration, as a model file is imported before train.py runs

sys.exit(train.main(sys.argv[2:]))
