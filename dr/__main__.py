"""`python -m dr` runs the same CLI as the `dr` console script."""

from dr import cli

if __name__ == "__main__":
    cli.main()
