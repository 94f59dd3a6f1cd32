import sys

from peagent.cli import main

sys.exit(main())
