"""Train a model of the zoo: ``python train.py --help`` lists every flag, model and estimator.

The program is :mod:`zoo.train`, which an installed package also provides as the
``discrete-zoo-train`` command.
"""

import sys

from zoo.train import main

if __name__ == "__main__":
    sys.exit(main())
