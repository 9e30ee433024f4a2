"""The local mesh's control plane: xDS over gRPC to every Envoy, as istiod serves it.

One aggregated stream per proxy (ADS) carries listeners, routes, clusters, endpoints and
secrets; each push is versioned and Envoy answers it with an ACK or a NACK carrying its reason.
"""

import os
import sys

# The mesh forks a child for every app and Envoy while the gRPC server runs; each child execs at
# once and never uses gRPC. gRPC's fork handlers, meant for children that do, crash such a child
# (SIGSEGV or SIGABRT, "epoll_wait error: Bad file descriptor") when the fork meets a busy gRPC
# thread. gRPC reads this when it is first imported: this package must be imported before grpc.
if "grpc" in sys.modules and os.environ.get("GRPC_ENABLE_FORK_SUPPORT", "").lower() not in ("0", "false"):
    raise ImportError("grpc was imported before meshconf's local control plane, with its fork handlers on: "
                      "the mesh's Envoys and apps would crash as they start; set GRPC_ENABLE_FORK_SUPPORT=false")
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
