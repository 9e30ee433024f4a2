"""The YAML manifests the suites apply; a package only so that they install with meshconf."""
