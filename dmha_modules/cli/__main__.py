"""``python -m dmha_modules.cli``: the ``dmha`` command without the console script."""

import sys

from dmha_modules.cli import main

if __name__ == "__main__":  # not when imported, e.g. by pkgutil.walk_packages
    sys.exit(main())
