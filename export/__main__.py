"""``python -m export export|validate ...``: the export CLI without the tfp-vae wrapper."""

import sys

from export.cli import main

sys.exit(main())
