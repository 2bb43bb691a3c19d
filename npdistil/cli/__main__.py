"""``python -m npdistil.cli``: the ``npdistil`` command without its installed script."""

from . import main

raise SystemExit(main())
