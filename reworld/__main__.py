import sys

from reworld.cli import main

sys.exit(main())
