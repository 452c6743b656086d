"""`python -m bench.operator_scale`: see the package's docstring, or --help."""

import sys

from bench.operator_scale.run import main

sys.exit(main())
