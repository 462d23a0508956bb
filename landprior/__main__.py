"""``python -m landprior``: the same command line as the ``landprior`` script."""

from landprior.cli import main

if __name__ == "__main__":
    main()
