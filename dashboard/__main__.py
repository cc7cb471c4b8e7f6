"""``python -m dashboard --results DIR``: serve the dashboard (see :func:`dashboard.app.main`)."""
import sys

from dashboard.app import main

sys.exit(main())
