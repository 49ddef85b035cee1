"""``python -m nipype_batch.cli``, the same as the ``nipype-batch`` command."""

import sys

from . import main

sys.exit(main())
