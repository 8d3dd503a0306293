"""``python -m bpj.cli``: the ``bpj`` command."""

import sys

from bpj.cli import main

sys.exit(main())
