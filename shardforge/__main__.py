import sys

from shardforge.cli import main

sys.exit(main())
