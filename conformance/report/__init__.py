"""Results: per-feature records, the conformance report, the terminal summary."""
