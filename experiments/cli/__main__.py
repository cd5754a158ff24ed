"""``python -m undertow.experiments.cli ...`` is ``undertow ...`` (torchrun launches it this way)."""

import sys

from undertow.experiments.cli.app import main

sys.exit(main())
