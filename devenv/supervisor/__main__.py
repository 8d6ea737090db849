"""``python -m devenv.supervisor``: the daemon, as ``canaryctl dev up`` launches it."""

import sys

from devenv.supervisor.daemon import main

sys.exit(main())
