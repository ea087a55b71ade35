"""``python -m aimodel_worker``: the ``aimodel-report`` command."""

from .cli import main

raise SystemExit(main())
