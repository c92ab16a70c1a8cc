"""`python -m runtime.review`: see `runtime.review`."""

from runtime.review import main

raise SystemExit(main())
