"""The local reference mesh: real Envoy sidecars and gateway, no Kubernetes."""
