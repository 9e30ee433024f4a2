"""The suites' fixtures live in fixtures/; this makes them visible here."""

from fixtures.mesh import (  # noqa: F401
    _feature_context,
    applied,
    bookinfo,
    evidence,
    namespace,
    run_settings,
    target,
)
