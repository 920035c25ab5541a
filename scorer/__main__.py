"""``python -m scorer``: the same as the ``micronet-score`` console script."""

from scorer.cli import main

raise SystemExit(main())
