import sys

from modelfleet.kubectl_plugin.main import main

sys.exit(main())
