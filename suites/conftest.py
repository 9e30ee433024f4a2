"""The suites' fixtures (conformance.fixtures), loaded as a pytest plugin."""

pytest_plugins = ["conformance.fixtures.mesh"]
