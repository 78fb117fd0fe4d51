"""``python -m explainer.cli``: the same as the ``explain`` command."""

import sys

from explainer.cli.main import main

sys.exit(main())
