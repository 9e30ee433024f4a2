"""The suites' fixtures live in fixtures/; this makes them visible here."""

from fixtures.mesh import _feature_context, applied, bookinfo, evidence, run_settings, target  # noqa: F401
