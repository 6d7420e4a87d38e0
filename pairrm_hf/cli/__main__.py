"""``python -m pairrm_hf.cli …`` (what ``torchrun -m`` and ``accelerate launch -m`` start): the ``pairrm`` command."""

import sys

from .main import main

sys.exit(main())
