"""`python -m sftkit ...` runs the CLI, as the `sftkit` script does (for an environment whose
scripts directory is not on PATH)."""

from sftkit.cli import main

if __name__ == "__main__":
    main()
