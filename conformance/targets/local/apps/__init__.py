"""The workloads of the local reference mesh: one small stdlib-only HTTP process per pod.

Run as `python -m conformance.targets.local.apps APP --listen IP:PORT --pod NAME --namespace NS
[--version v1|v2|v3] [--proxy IP:PORT] [--registry FILE]`, APP being one of APPS.

Only the standard library is imported here and in every app module: a dozen of these
start at once, and each must be listening within a fraction of a second.
"""

APPS = ("productpage", "details", "ratings", "reviews", "httpbin", "client", "http-echo")
