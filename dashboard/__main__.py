"""``python -m dashboard --results DIR``: serve the dashboard (see :func:`dashboard.app.main`);
``python -m dashboard --results DIR --study``: a study's group view and runs (see :func:`dashboard.study_app.main`);
``python -m dashboard export-bundle ...``: write the offline scene player (see :func:`dashboard.bundle.main`)."""
import sys

if sys.argv[1:2] == ["export-bundle"]:
    from dashboard.bundle import main as export_bundle
    sys.exit(export_bundle(sys.argv[2:]))

if "--study" in sys.argv[1:]:
    from dashboard.study_app import main as serve_study
    sys.exit(serve_study())

from dashboard.app import main

sys.exit(main())
