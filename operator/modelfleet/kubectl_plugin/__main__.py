import sys

from modelfleet.kubectl_plugin.cli import main

sys.exit(main())
