"""The local mesh's control plane: xDS over gRPC to every Envoy, as istiod serves it.

One aggregated stream per proxy (ADS) carries listeners, routes, clusters, endpoints and
secrets; each push is versioned and Envoy answers it with an ACK or a NACK carrying its reason.
"""
