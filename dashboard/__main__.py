"""``python -m dashboard --results DIR``: serve the dashboard (see :func:`dashboard.app.main`);
``python -m dashboard export-bundle ...``: write the offline scene player (see :func:`dashboard.bundle.main`)."""
import sys

if sys.argv[1:2] == ["export-bundle"]:
    from dashboard.bundle import main as export_bundle
    sys.exit(export_bundle(sys.argv[2:]))

from dashboard.app import main

sys.exit(main())
