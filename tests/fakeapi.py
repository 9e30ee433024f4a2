"""A fake Kubernetes API server for contract tests: it answers as a kind cluster's API server would.

What it serves and how (kubernetes/kubernetes, apiserver and apiextensions-apiserver):
- discovery (/api, /apis, /apis/<group>/<version>; tests/fake_discovery.py) of the built-in kinds
  meshconf uses, and of the kinds of every applied CustomResourceDefinition (tests/fake_crds.py). Any
  other resource path is 404 "the server could not find the requested resource", so the
  kubernetes client's discovery raises ResourceNotFoundError for a kind whose CRD is missing,
  and a CRD's objects go with it when it is deleted;
- objects by URL path: GET (an object, or a collection as a <Kind>List), POST (create; 409
  AlreadyExists for a taken name), PATCH with application/apply-patch+yaml (server-side apply,
  tests/fake_apply.py: field managers, 409 conflicts unless force) or merge-patch+json, DELETE
  (uid preconditions; a namespace takes its objects with it);
- objects of CRD kinds are validated against the CRD's schema (422 Invalid; undeclared fields
  pruned with a warning, or refused with fieldValidation=Strict);
- a Service gets a cluster IP and, as NodePort or LoadBalancer, a node port per port (30000-32767,
  each used once; tests/fake_services.py); no controller gives a LoadBalancer an ingress address, as on kind;
- the items of a built-in kind's list carry no apiVersion or kind (a CRD kind's do), as the API
  server serializes typed lists;
- create with ?dryRun=All answers the object as it would be stored (name from generateName, uid,
  creationTimestamp; no resourceVersion) and stores nothing; any other dryRun value is 422 Invalid
  CreateOptions (apiserver pkg/endpoints/handlers/create.go, ValidateDryRun);
- admission (tests/fake_admission.py): a namespaced object is created only in a namespace that
  exists (404 otherwise); every write (a dry run too) goes through the admission webhooks it holds:
  mutating first, then the schema, then validating, as the API server orders them. A webhook's
  Service is found in `webhook_services`;
- with `deployments_roll_out`, the Deployment and ReplicaSet controllers and the kubelet
  (tests/fake_admission.py): a written Deployment's pods are created through admission and run ready.
A test may script the answers of one method and path, and reads every request afterwards. Requests,
replies and the HTTP server are tests/fake_http.py; merge patch tests/fake_patch.py.

Tests ask for the `api` fixture by name (tests/conftest.py loads this module with pytest_plugins);
tests/cluster_builders.py's install_crds applies upstream CRDs. A kubeconfig pointing at it needs only
`server: api.url` (no credentials are checked).
"""

import copy
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conformance.webhooks import MUTATING, VALIDATING
from tests import fake_discovery
from tests.fake_admission import CONTROLLER_MANAGER, DeploymentController, Webhooks, generated_name, missing_namespace
from tests.fake_apply import Owners, conflict_status
from tests.fake_crds import CRD_GV, Crds, Resource, invalid, prune, strict_decoding
from tests.fake_discovery import BUILTIN, Route
from tests.fake_http import (DRY_RUN_ALL, Answer, Reply, Seen, field_manager, field_validation, invalid_dry_run,
                             serve, status)
from tests.fake_patch import APPLY_PATCH, MERGE_PATCH, merge, spec_of, without_status
from tests.fake_services import allocate

NOT_FOUND = "the server could not find the requested resource"
# staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go: the body's namespace must be the URL's.
NAMESPACE_MISMATCH = "the namespace of the provided object does not match the namespace sent on the request"
CREATED_AT = "2026-01-01T00:00:00Z"


class FakeApi:
    """State and scripts behind the HTTP handler; tests read .requests afterwards."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self.objects: dict[str, dict[str, Any]] = {}  # by object path; a test may seed one directly
        self.scripts: dict[tuple[str, str], list[Answer | Callable[[], Answer]]] = {}
        # Something outside the API reacting to an object being written (e.g. a gateway starting).
        self.after_apply: dict[str, Callable[[], None]] = {}
        # Act as the Deployment controller and the kubelet: a written Deployment gets its pods, running
        # and ready, and is stored fully rolled out.
        self.deployments_roll_out = False
        # Admission webhooks' Services as the API server's resolver finds them: (namespace, name,
        # port) -> the address where a test's webhook server listens.
        self.webhook_services: dict[tuple[str, str, int], tuple[str, int]] = {}
        self.crds = Crds()
        self.owners = Owners()
        self._webhooks = Webhooks(self.objects, self.webhook_services)
        self._deployments = DeploymentController(self.objects, self.owners, self._create_pod)
        self.lock = threading.RLock()
        self._versions = itertools.count(1)
        self.port = 0  # set by the `api` fixture
        self.url = ""

    # -- what tests use ----------------------------------------------------------------------

    def script(self, method: str, path: str, *replies: Answer | Callable[[], Answer]) -> None:
        """Answer method+path with these replies in turn; the last one repeats."""
        self.scripts[(method, path)] = list(replies)

    def seen(self, method: str, path: str) -> list[int]:
        return [i for i, r in enumerate(self.requests) if r.method == method and r.path == path]

    def install_crd(self, crd: dict[str, Any]) -> None:
        """A CRD someone applied before the test (an installer, an admin), established."""
        with self.lock:
            route = Route(fake_discovery.builtin_resource(CRD_GV, "customresourcedefinitions"), None, crd["metadata"]["name"])
            self._create(route, copy.deepcopy(crd), "kubectl", "Update")

    # -- answering ------------------------------------------------------------------------------

    def receive(self, seen: Seen) -> Reply:
        """A request off the wire: kept for the test to read, then answered."""
        self.requests.append(seen)
        return self.answer(seen)

    def answer(self, seen: Seen) -> Reply:
        with self.lock:
            scripted = self.scripts.get((seen.method, seen.path))
            if scripted:
                answer = scripted.pop(0) if len(scripted) > 1 else scripted[0]
                code, payload = answer() if callable(answer) else answer
                return Reply(code, payload)
            document = fake_discovery.discovery(seen.path, self.served()) if seen.method == "GET" else None
            if document is not None:
                return Reply(200, document)
            found = fake_discovery.route(seen.path, self.served())
            if found is None:
                return Reply(404, status(404, "NotFound", NOT_FOUND))
            handler = {"GET": self._get, "POST": self._post, "PATCH": self._patch,
                       "DELETE": self._delete}.get(seen.method)
            if handler is None:
                return Reply(405, status(405, "MethodNotAllowed", f"fake API: {seen.method} is not modelled"))
            if "dryRun" in seen.query and seen.method != "POST":
                return Reply(405, status(405, "MethodNotAllowed", f"fake API: dryRun on {seen.method} is not modelled"))
            reply = handler(found, seen)
            hook = self.after_apply.get(seen.path) if seen.method == "PATCH" else None
            if hook is not None and reply.code < 300:
                hook()
            return reply

    # -- discovery ----------------------------------------------------------------------------

    def served(self) -> list[Resource]:
        return [*BUILTIN, *self.crds.served()]

    # -- reading --------------------------------------------------------------------------------

    def _get(self, route: Route, seen: Seen) -> Reply:
        if route.name is None:
            return Reply(200, self._list(route, seen.query))
        obj = self.objects.get(route.object_path)
        if obj is None:
            return _not_found(route)
        if route.subresource == "log":
            return Reply(200, "")  # a pod that logged nothing yet
        return Reply(200, obj)

    def _list(self, route: Route, query: dict[str, list[str]]) -> dict[str, Any]:
        prefix = route.collection + "/"
        # A built-in kind's list is typed: its items' apiVersion and kind are left out (a CRD's are not).
        typed = None if self.crds.crd_of(route.resource) is not None else ("apiVersion", "kind")
        wanted = dict(pair.split("=", 1) for pair in query.get("labelSelector", [""])[0].split(",") if "=" in pair)
        found = []
        for path, obj in self.objects.items():
            inside = path.startswith(prefix) and "/" not in path[len(prefix):]
            cluster_wide = route.namespace is None and route.resource.namespaced and _in_any_namespace(path, route)
            labels = (obj.get("metadata") or {}).get("labels") or {}
            if (inside or cluster_wide) and all(labels.get(k) == v for k, v in wanted.items()):
                found.append(obj if typed is None else {k: v for k, v in obj.items() if k not in typed})
        return {"kind": f"{route.resource.kind}List", "apiVersion": route.resource.group_version,
                "metadata": {"resourceVersion": str(next(self._versions))}, "items": found}

    # -- writing --------------------------------------------------------------------------------

    def _post(self, route: Route, seen: Seen) -> Reply:
        dry_run = seen.query.get("dryRun", [])
        if any(value != DRY_RUN_ALL for value in dry_run):
            return Reply(422, invalid_dry_run(dry_run))
        body = copy.deepcopy(seen.body) if isinstance(seen.body, dict) else {}
        meta = body.get("metadata") or {}
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = generated_name(meta["generateName"])
        name = meta.get("name")
        if route.name is not None or not name:
            return Reply(422, status(422, "Invalid", f'{route.resource.kind} "" is invalid: metadata.name: '
                                                     "Required value: name or generateName is required"))
        namespace = (body.get("metadata") or {}).get("namespace")
        if namespace and route.namespace and namespace != route.namespace:
            return Reply(400, status(400, "BadRequest", NAMESPACE_MISMATCH))
        target = Route(route.resource, route.namespace, name)
        if target.object_path in self.objects:
            return Reply(409, status(409, "AlreadyExists", f'{route.resource.qualified} "{name}" already exists',
                                     details={"name": name, "group": route.resource.group,
                                              "kind": route.resource.plural}))
        return self._create(target, body, field_manager(seen), "Update", field_validation(seen), dry_run=bool(dry_run))

    def _patch(self, route: Route, seen: Seen) -> Reply:
        kind = seen.headers.get("content-type", "").split(";")[0].strip()
        body = seen.body if isinstance(seen.body, dict) else {}
        if route.name is None or route.subresource:
            return Reply(405, status(405, "MethodNotAllowed", "fake API: only objects are patched"))
        if kind == APPLY_PATCH:
            return self._apply(route, body, seen)
        if kind == MERGE_PATCH:
            current = self.objects.get(route.object_path)
            if current is None:
                return _not_found(route)
            return self._store(route, merge(current, body), current, field_manager(seen), "Update",
                               field_validation(seen))
        return Reply(415, status(415, "UnsupportedMediaType", f"fake API: patch type {kind!r} is not modelled"))

    def _apply(self, route: Route, body: dict[str, Any], seen: Seen) -> Reply:
        manager = seen.query.get("fieldManager", [""])[0]
        if not manager:
            return Reply(422, status(422, "Invalid", 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: '
                                                     "Required value: is required for apply patch"))
        name = (body.get("metadata") or {}).get("name")
        if name != route.name:
            return Reply(400, status(400, "BadRequest", f"the name of the object ({name}) does not match the "
                                                        f"name on the URL ({route.name})"))
        namespace = (body.get("metadata") or {}).get("namespace")
        if namespace and route.namespace and namespace != route.namespace:
            return Reply(400, status(400, "BadRequest", NAMESPACE_MISMATCH))
        current = self.objects.get(route.object_path)
        force = seen.query.get("force", ["false"])[0] == "true"
        before = copy.deepcopy(self.owners.by_object.get(route.object_path))
        result, conflicts = self.owners.apply(route.object_path, manager, body.get("apiVersion", ""),
                                              without_status(current, route.resource), body, force)
        if result is None:
            return Reply(409, conflict_status(conflicts))
        if current is None:
            reply = self._create(route, result, manager, None, field_validation(seen), code=201)
        else:
            if "status" in current:
                result["status"] = current["status"]
            reply = self._store(route, result, current, manager, None, field_validation(seen))
        if reply.code >= 300:  # refused: the apply changed no ownership either
            self.owners.forget(route.object_path)
            if before is not None:
                self.owners.by_object[route.object_path] = before
        return reply

    def _create(self, route: Route, obj: dict[str, Any], manager: str, operation: str | None,
                validation: str = "Warn", code: int = 201, dry_run: bool = False) -> Reply:
        """Store a new object (operation None: ownership already recorded by an apply)."""
        refused = missing_namespace(self.objects, route)
        if refused is not None:
            return Reply(*refused)
        meta = obj.setdefault("metadata", {})
        meta.update({"uid": f"uid-{next(self._versions)}", "creationTimestamp": CREATED_AT, "generation": 1})
        if route.namespace:
            meta["namespace"] = route.namespace
        if route.resource.status_subresource and route.resource.plural != "customresourcedefinitions":
            obj.pop("status", None)
        return self._store(route, obj, None, manager, operation, validation, code, dry_run)

    def _store(self, route: Route, obj: dict[str, Any], before: dict[str, Any] | None, manager: str,
               operation: str | None, validation: str, code: int = 200, dry_run: bool = False) -> Reply:
        """Admit, validate, complete and keep an object; what the API server does on every write.

        operation None: an apply, whose ownership the caller recorded already. A dry run stops
        short of keeping anything."""
        obj, refused = self._webhooks.admit(MUTATING, route, obj, before)
        if refused is not None:
            return Reply(*refused)
        warnings, problem = self._validate(route, obj, validation)
        requested = copy.deepcopy(obj)  # what the writer set: the server's allocations are nobody's
        if problem is None and route.resource.kind == "Service":
            problem = allocate(self.objects, route, obj)
        if problem is not None:
            return problem
        obj, refused = self._webhooks.admit(VALIDATING, route, obj, before)
        if refused is not None:
            return Reply(*refused)
        if dry_run:
            return Reply(code, obj, warnings)
        meta = obj["metadata"]
        if before is not None:
            meta["uid"] = before.get("metadata", {}).get("uid", meta.get("uid"))
            meta["creationTimestamp"] = before.get("metadata", {}).get("creationTimestamp", CREATED_AT)
            generation = int(before.get("metadata", {}).get("generation", 1))
            meta["generation"] = generation + (spec_of(before) != spec_of(obj))
        if operation is not None:
            self.owners.update(route.object_path, manager, obj.get("apiVersion", ""), before, requested)
        meta["resourceVersion"] = str(next(self._versions))
        meta["managedFields"] = self.owners.managed_fields(route.object_path, CREATED_AT)
        if route.resource.plural == "customresourcedefinitions":
            self.crds.store(obj)
        if route.resource.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        self.objects[route.object_path] = obj
        if route.resource.kind == "Deployment" and self.deployments_roll_out:
            obj["status"] = self._deployments.run(route, obj, before)
        return Reply(code, obj, warnings)

    def _validate(self, route: Route, obj: dict[str, Any], validation: str) -> tuple[list[str], Reply | None]:
        """Warnings, or the refusal, of validation; a custom object is pruned as the server prunes it."""
        name = obj["metadata"].get("name", "")
        if route.resource.plural == "customresourcedefinitions":
            causes = self.crds.problems(obj)
            return [], Reply(422, invalid(route.resource, name, causes)) if causes else None
        if self.crds.crd_of(route.resource) is None:
            return [], None
        checked = self.crds.check(route.resource, obj)
        if checked.causes:
            return [], Reply(422, invalid(route.resource, name, checked.causes))
        if checked.undeclared and validation == "Strict":
            return [], Reply(400, strict_decoding(route.resource, checked.undeclared))
        for path in checked.pruned:
            prune(obj, path)
        return ([] if validation == "Ignore" else [f'unknown field "{path}"' for path in checked.undeclared]), None

    # -- what the controllers and the API server add ------------------------------------------

    def _create_pod(self, route: Route, pod: dict[str, Any]) -> tuple[int, Any]:
        """A pod the Deployment controller creates, through admission like any other."""
        reply = self._create(route, pod, CONTROLLER_MANAGER, "Update")
        return reply.code, reply.payload

    def _delete(self, route: Route, seen: Seen) -> Reply:
        if route.name is None or route.subresource:
            return Reply(405, status(405, "MethodNotAllowed", "fake API: only objects are deleted"))
        obj = self.objects.get(route.object_path)
        if obj is None:
            return _not_found(route)
        wanted_uid = ((seen.body or {}).get("preconditions") or {}).get("uid")
        uid = obj.get("metadata", {}).get("uid")
        if wanted_uid and wanted_uid != uid:
            return Reply(409, status(409, "Conflict", f"Precondition failed: UID in precondition: {wanted_uid}, "
                                                      f"UID in object meta: {uid}"))
        del self.objects[route.object_path]
        self.owners.forget(route.object_path)
        self._deployments.remove_pods(route.object_path)  # the garbage collector's part
        if route.resource.kind == "Namespace":  # the namespace controller empties it
            inside = f"/namespaces/{route.name}/"
            for path in [p for p in self.objects if inside in p]:
                del self.objects[path]
                self.owners.forget(path)
        if route.resource.plural == "customresourcedefinitions":
            self._remove_crd(route.name or "")
        return Reply(200, obj)

    def _remove_crd(self, name: str) -> None:
        crd = self.crds.remove(name)
        if crd is None:
            return
        group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
        for path in [p for p in self.objects if p.startswith(f"/apis/{group}/") and f"/{plural}/" in p]:
            del self.objects[path]
            self.owners.forget(path)


def _in_any_namespace(path: str, route: Route) -> bool:
    prefix = f"/apis/{route.resource.group_version}" if route.resource.group else "/api/v1"
    parts = path[len(prefix):].strip("/").split("/") if path.startswith(prefix + "/") else []
    return len(parts) == 4 and parts[0] == "namespaces" and parts[2] == route.resource.plural


def _not_found(route: Route) -> Reply:
    message = f'{route.resource.qualified} "{route.name}" not found'
    return Reply(404, status(404, "NotFound", message,
                             details={"name": route.name, "group": route.resource.group,
                                      "kind": route.resource.plural}))


def items(*objs: dict[str, Any]) -> Answer:
    return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": list(objs)}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    server = serve(fake.receive)
    fake.port = server.server_address[1]
    fake.url = f"http://127.0.0.1:{fake.port}"
    yield fake
    server.shutdown()
    server.server_close()
