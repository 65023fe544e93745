"""``python -m clusters.agent``: see clusters.agent.main."""

import sys

from clusters.agent.main import main

sys.exit(main())
