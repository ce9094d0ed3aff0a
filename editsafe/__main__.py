"""Allow ``python -m editsafe``."""

from editsafe.cli import main

main()
