"""Allow ``python -m pdscaler``."""

from pdscaler.cli import main

raise SystemExit(main())
