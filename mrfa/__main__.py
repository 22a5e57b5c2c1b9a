"""``python -m mrfa COMMAND ...``: the same as the ``mrfa`` console script."""
import sys

from mrfa.cli import main

sys.exit(main())
