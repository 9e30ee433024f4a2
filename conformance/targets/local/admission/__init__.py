"""Admission as the Kubernetes API server does it, for the local mesh.

- webhooks: the webhooks of Mutating/ValidatingWebhookConfiguration documents, and which
  requests they select (rules, namespaceSelector, objectSelector);
- review: `admit` sends AdmissionReview v1 over HTTPS to each selected webhook, applies the
  mutating webhooks' JSONPatches, honours failurePolicy and timeoutSeconds, and fails with the
  API server's own messages;
- injector: Istio's sidecar injector (istiod's /inject) as an HTTPS webhook server.
"""
