import sys

from acm_exp.figures.command import main

if __name__ == "__main__":
    sys.exit(main())
