"""Istio's standard metrics on the local reference mesh.

Istio's proxies count requests in the istio_stats filter (istio/proxy
source/extensions/filters/http/istio_stats/istio_stats.cc), which upstream Envoy lacks. Here
every sidecar's and gateway's HTTP connection manager writes an access log instead
(access_log.py), and at scrape time those records become `istio_requests_total` and
`istio_request_duration_milliseconds` with the labels istio_stats would give them (labels.py,
from what the mesh knows of its workloads: peers.py), counted per proxy (metrics.py) and served
per pod as pilot-agent serves its merged metrics on :15020/stats/prometheus (server.py), for a
real Prometheus that scrapes them (prometheus.py). mesh_telemetry.py ties them to the mesh.

Modules are imported by name: this package's __init__ imports nothing, so the translator can
use access_log.py without pulling the rest in.
"""
