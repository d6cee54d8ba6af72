"""`python -m clients`: the same command line as the `patchstream` console script."""

from clients.cli import main

raise SystemExit(main())
