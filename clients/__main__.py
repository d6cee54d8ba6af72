"""`python -m patchstream.clients`: the same command line as the `patchstream` console script."""

from patchstream.clients.cli import main

raise SystemExit(main())
