"""Where the mesh under test runs: one protocol (base.py), one module per environment."""
