"""meshconf: end-to-end service-mesh conformance harness."""

from conformance.errors import ConformanceError

__all__ = ["ConformanceError", "__version__"]
__version__ = "0.1.0"
