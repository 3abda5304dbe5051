"""Kubernetes I/O of the operator: the only module that talks to the API server.

Reads a namespace's objects and its live RouterConfig, server-side-applies the ConfigMap, patches status
subresources and records Events. Calls go through the official (synchronous) client in a worker thread so
the operator's event loop never blocks. Transient failures surface as `TransientApiError` for the caller
to retry with backoff; everything else is a bug or a permission problem and propagates.

Every call carries a timeout (`API_TIMEOUT`: connect and read), and urllib3's own retries are off: an API
server that accepts a connection and never answers costs one call its timeout, not the worker thread
forever, and the callers' retry loops (which know how long to wait) are the only ones.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelroute_contract import RouterConfig
from modelroute_contract.constants import (
    CONFIG_VERSION_ANNOTATION,
    CONFIGMAP_NAME,
    SIDECAR_LABEL,
    SIDECAR_LABEL_VALUE,
)
from modelroute_contract.schemas import ACCEPTED_SCHEMA_VERSIONS, config_key, stored_documents
from modelroute_operator.logic import status_report
from modelroute_operator.logic.learned import FORBIDDEN_KEY, referenced_config_maps
from modelroute_operator.logic.resources import (
    GROUP,
    KINDS,
    VERSION,
    Canary,
    ModelEndpoint,
    Resource,
    RoutingPolicy,
)

log = logging.getLogger(__name__)

SOURCES_KEY = "sources.json"
"""ConfigMap key recording which generation of each object the live config was compiled from."""
FIELD_MANAGER = "modelroute-operator"
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelroute-operator", "app.kubernetes.io/name": "modelroute"}


@dataclass(frozen=True)
class ApiTimeout:
    """Bounds of one API call, in seconds (urllib3's `(connect, read)` pair)."""

    connect: float = 5.0
    read: float = 15.0
    """Per socket read: a list of a few thousand objects arrives well within it."""

    @property
    def request_timeout(self) -> tuple[float, float]:
        """The client's `_request_timeout` argument."""
        return (self.connect, self.read)


API_TIMEOUT = ApiTimeout()
CONNECTIONS = 16
"""Kept-alive connections to the API server: one per worker thread the operator runs calls on."""
WRITE_CONNECTIONS = 32
"""Kept-alive connections of the writes (`RestWriter`): one per reconcile pass in flight."""


def new_api_client(timeout: ApiTimeout = API_TIMEOUT) -> client.ApiClient:
    """An ApiClient on the loaded configuration without urllib3 retries (ours back off instead)."""
    configuration = client.Configuration.get_default_copy()
    configuration.retries = False
    # as many connections as the operator has API threads (urllib3 would open and drop the extra ones)
    configuration.connection_pool_maxsize = max(configuration.connection_pool_maxsize, CONNECTIONS)
    return client.ApiClient(configuration)


def read_status_snapshot(namespace: str | None) -> status_report.Snapshot:
    """What `modelroute status` reports on: our objects, the sidecar pods and the live-config ConfigMaps,
    in one namespace or all (synchronous: the CLI has no event loop)."""
    timeout = API_TIMEOUT.request_timeout
    with new_api_client() as api:
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        objects: list[dict[str, Any]] = []
        for kind in KINDS:
            listed: Any
            if namespace:
                listed = custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural, _request_timeout=timeout
                )
            else:
                listed = custom.list_cluster_custom_object(
                    GROUP, VERSION, kind.plural, _request_timeout=timeout
                )
            # Lists carry kind/apiVersion on the list, not always on each item.
            objects += [{**item, "kind": kind.kind_name} for item in listed.get("items", [])]
        pods_selector = f"{SIDECAR_LABEL}={SIDECAR_LABEL_VALUE}"
        cm_selector = f"metadata.name={CONFIGMAP_NAME}"
        if namespace:
            pods = core.list_namespaced_pod(namespace, label_selector=pods_selector, _request_timeout=timeout)
            configmaps = core.list_namespaced_config_map(
                namespace, field_selector=cm_selector, _request_timeout=timeout
            )
        else:
            pods = core.list_pod_for_all_namespaces(label_selector=pods_selector, _request_timeout=timeout)
            configmaps = core.list_config_map_for_all_namespaces(
                field_selector=cm_selector, _request_timeout=timeout
            )
        return status_report.Snapshot(
            objects=objects,
            pods=[api.sanitize_for_serialization(p) for p in pods.items],
            configmaps=[api.sanitize_for_serialization(c) for c in configmaps.items],
        )


class ListRefusedError(Exception):
    """A list the API server refuses (RBAC, or a resource it does not serve)."""


class NotFoundError(ListRefusedError):
    """The API server says the object (or the resource) does not exist: 404."""


class TransientApiError(Exception):
    """The API server could not be reached or answered with a retryable status."""


CREDENTIALS_ROLE_ENV = "MODELROUTE_CREDENTIALS_CLUSTERROLE"
"""The chart's ClusterRole granting `get` on credential Secrets, bound per namespace (for the hint)."""
SERVICE_ACCOUNT_ENV = "MODELROUTE_SERVICE_ACCOUNT"
"""`<namespace>:<name>` of the operator's ServiceAccount (the chart sets it, for the hint)."""


class SecretForbiddenError(Exception):
    """RBAC does not let the operator read a Secret: the message names the grant that is missing.

    The operator reads credential Secrets only where a RoleBinding allows it (the chart's
    `rbac.credentials`); RBAC cannot say "Secrets a ModelEndpoint references", so the platform engineer
    decides per namespace.
    """

    def __init__(self, namespace: str, name: str) -> None:
        role = os.environ.get(CREDENTIALS_ROLE_ENV) or "<release>-modelroute-credentials"
        account = os.environ.get(SERVICE_ACCOUNT_ENV) or "<release namespace>:<operator service account>"
        super().__init__(
            f"the operator may not read Secret {namespace}/{name} (RBAC: no get on secrets in {namespace}); "
            f"grant it with `kubectl create rolebinding modelroute-credentials -n {namespace} "
            f"--clusterrole={role} --serviceaccount={account}` or list {namespace} in the chart's "
            "rbac.credentials.namespaces"
        )
        self.namespace, self.name = namespace, name


def load_client_config(context: str | None = None, kubeconfig: str | None = None) -> None:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config).
    A `context` or `kubeconfig` named (the kubectl plugin's flags) always means the kubeconfig."""
    try:
        if context or kubeconfig:
            raise config.ConfigException("a kubeconfig was asked for")
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig, context=context)
    if not client.Configuration.get_default_copy().verify_ssl:
        # Said once here instead of by urllib3 on every call (thousands of lines on a cold start).
        log.warning("TLS verification of the API server is off (kubeconfig insecure-skip-tls-verify)")
        urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)


PLUGIN_FIELD_MANAGER = "kubectl-modelroute"
"""The field manager of the kubectl plugin's status writes (its actions show up under it)."""


def set_canary_actions(namespace: str, name: str, actions: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `actions` into a Canary's `status.manual` through the status subresource (the spec, which
    Git owns, is not touched); returns the Canary as stored. Raises ApiException (404: no such Canary)."""
    api = client.CustomObjectsApi(new_api_client())
    timeout = API_TIMEOUT.request_timeout
    api.get_namespaced_custom_object(GROUP, VERSION, namespace, Canary.plural, name, _request_timeout=timeout)
    patched = api.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        Canary.plural,
        name,
        {"status": {"manual": dict(actions)}},
        field_manager=PLUGIN_FIELD_MANAGER,
        _request_timeout=timeout,
    )
    return cast(dict[str, Any], patched)


def _is_transient(exc: ApiException) -> bool:
    return exc.status in (0, 409, 429, 500, 502, 503, 504) or exc.status is None


def is_transient_failure(exc: BaseException) -> bool:
    """Whether a failed client call is worth retrying: the API server was away, slow or overloaded."""
    if isinstance(exc, ApiException):
        return _is_transient(exc)
    # urllib3 wraps connection failures and timeouts in its own exception types (MaxRetryError,
    # ProtocolError, ReadTimeoutError); OSError covers refused and reset connections.
    return isinstance(exc, OSError | TimeoutError) or type(exc).__module__.startswith("urllib3")


async def _call[T](fn: Callable[..., T], *args: Any, bounds: ApiTimeout = API_TIMEOUT, **kwargs: Any) -> T:
    kwargs.setdefault("_request_timeout", bounds.request_timeout)
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except Exception as exc:
        if not is_transient_failure(exc):
            raise
        detail = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
        raise TransientApiError(f"{fn.__name__}: {detail or type(exc).__name__}") from exc


@dataclass(frozen=True)
class LiveConfig:
    """The RouterConfig currently stored for a namespace, with the object generations it came from."""

    config_json: str
    """The document of the newest schema stored (the config as compiled)."""
    version: str
    sources: Mapping[str, int]
    """`Kind/name` → generation compiled into this config."""
    sequence: int = 0
    """The config's sequence (0 for a config stored before sequences existed)."""


@dataclass(frozen=True)
class RawObjects:
    """A namespace's objects of our kinds as plain dicts, as the API server returned them."""

    endpoints: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    canaries: list[dict[str, Any]] = field(default_factory=list)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    """Data of the ConfigMaps the policies name (difficulty model heads); absent ones are left out."""

    def all(self) -> list[dict[str, Any]]:
        return [*self.endpoints, *self.policies, *self.canaries]


def live_config_from(data: Mapping[str, str]) -> LiveConfig | None:
    """The RouterConfig a live-config ConfigMap's `data` holds, or None when it holds none."""
    # the newest schema's document: the config as compiled (older keys are renderings of it, or all
    # there is in a ConfigMap an older operator wrote)
    text = next(
        (data[k] for k in map(config_key, sorted(ACCEPTED_SCHEMA_VERSIONS, reverse=True)) if data.get(k)),
        None,
    )
    if not text:
        return None
    stored = json.loads(text)
    sources = json.loads(data.get(SOURCES_KEY) or "{}")
    return LiveConfig(
        config_json=text,
        version=stored.get("version", ""),
        sources=sources,
        sequence=int(stored.get("sequence") or 0),
    )


LIST_PAGE = 500
"""Objects per page of a start-up list (bounded memory per answer, few round trips)."""


def _namespaced(path: str, namespace: str) -> str:
    """`/api/v1/pods` → `/api/v1/namespaces/<ns>/pods` (the same for `/apis/<group>/<version>/<plural>`)."""
    base, _, plural = path.rpartition("/")
    return f"{base}/namespaces/{namespace}/{plural}"


class RestWriter:
    """The operator's many small writes (status patches, Events, ConfigMap applies) as aiohttp requests
    on the event loop, with the credentials and TLS settings of the official client's configuration.

    The official client is synchronous: each call crosses to a worker thread, and its pydantic-checked
    methods, model classes and urllib3 cost about 2.4 ms of CPU per call. A cold start writes some 25
    times per namespace (status and an Event per object, the ConfigMap, the token Secret, the sync
    figure), so at 1,000 namespaces that client alone was a minute of CPU. Reads stay on the official
    client: they are rare now (start-up listings, Secrets).
    """

    def __init__(self, configuration: client.Configuration, timeout: ApiTimeout) -> None:
        self._configuration = configuration
        self._timeout = aiohttp.ClientTimeout(sock_connect=timeout.connect, sock_read=timeout.read)
        self._host = str(configuration.host).rstrip("/")
        self._ssl: ssl.SSLContext | bool = False
        if self._host.startswith("https") and configuration.verify_ssl:
            context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
            if configuration.cert_file:
                context.load_cert_chain(configuration.cert_file, configuration.key_file)
            self._ssl = context
        elif self._host.startswith("https") and configuration.cert_file:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
            self._ssl = context
        self._session: aiohttp.ClientSession | None = None

    def _headers(self, content_type: str) -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        # read per request: in a pod the client's refresh hook rotates the projected token
        bearer = self._configuration.auth_settings().get("BearerToken")
        if bearer and bearer.get("value"):
            headers["Authorization"] = str(bearer["value"])
        return headers

    async def request(self, method: str, path: str, body: Any, content_type: str) -> dict[str, Any] | None:
        """The stored object as the API answered it; None on 404. Transient failures (unreachable,
        timeouts, 409, 429, 5xx) raise `TransientApiError`; other refusals `ApiException`."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=WRITE_CONNECTIONS, ssl=self._ssl), timeout=self._timeout
            )
        data = json.dumps(body, separators=(",", ":"))
        try:
            async with self._session.request(
                method, f"{self._host}{path}", data=data, headers=self._headers(content_type)
            ) as response:
                text = await response.read()
                status, reason = response.status, response.reason
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise TransientApiError(f"{method} {path}: {exc or type(exc).__name__}") from exc
        if status == 404:
            return None
        if status >= 300:
            refused = ApiException(status=status, reason=reason)
            refused.body = text[:2000].decode(errors="replace")
            if _is_transient(refused):
                raise TransientApiError(f"{method} {path}: {status} {reason}") from refused
            raise refused
        return cast(dict[str, Any], json.loads(text or b"{}"))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class KubeApi:
    """Thin async wrapper over the client calls the operator needs."""

    def __init__(self, api_client: client.ApiClient | None = None, timeout: ApiTimeout = API_TIMEOUT) -> None:
        self._api_client = api_client or new_api_client(timeout)
        self._timeout = timeout
        self._custom = client.CustomObjectsApi(self._api_client)
        self._core = client.CoreV1Api(self._api_client)
        self._writer = RestWriter(self._api_client.configuration, timeout)

    def close(self) -> None:
        self._api_client.close()

    async def aclose(self) -> None:
        """Close the writer's connections (on the loop that used them), then the client's."""
        await self._writer.close()
        self.close()

    async def _call[T](self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await _call(fn, *args, bounds=self._timeout, **kwargs)

    async def list_objects(self, namespace: str) -> RawObjects:
        """All ModelEndpoints, RoutingPolicies and Canaries of a namespace."""
        lists = await asyncio.gather(
            *(
                self._call(self._custom.list_namespaced_custom_object, GROUP, VERSION, namespace, kind.plural)
                for kind in (ModelEndpoint, RoutingPolicy, Canary)
            )
        )
        items: list[list[dict[str, Any]]] = [
            list(cast(dict[str, Any], result).get("items", [])) for result in lists
        ]
        endpoints, policies, canaries = items
        config_maps = await self.read_config_maps(namespace, referenced_config_maps(policies))
        return RawObjects(endpoints, policies, canaries, config_maps)

    async def read_config_maps(self, namespace: str, names: Iterable[str]) -> dict[str, dict[str, str]]:
        """The data of the named ConfigMaps that exist (read one by one: only those policies name, never
        a list of the namespace's ConfigMaps)."""
        found: dict[str, dict[str, str]] = {}
        for name in sorted(set(names)):
            try:
                cm = await self._call(self._core.read_namespaced_config_map, name, namespace)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                if exc.status == 403:  # not granted: the compiler names the chart value on the policy
                    found[name] = {FORBIDDEN_KEY: ""}
                    continue
                raise
            found[name] = dict(cm.data or {})
        return found

    async def list_all(
        self,
        path: str,
        namespaces: Sequence[str] | None = None,
        label_selector: str = "",
        field_selector: str = "",
        page: int = LIST_PAGE,
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of every object at a list path such as `/apis/<group>/<version>/<plural>` or
        `/api/v1/pods`, cluster-wide or in `namespaces`, as plain dicts (no model classes)."""
        prefixes = [path] if namespaces is None else [_namespaced(path, ns) for ns in namespaces]
        for prefix in prefixes:
            token = ""
            while True:
                query = [("limit", str(page))]
                query += [("labelSelector", label_selector)] if label_selector else []
                query += [("fieldSelector", field_selector)] if field_selector else []
                query += [("continue", token)] if token else []
                listed = await self._call(self._get_json, prefix, query)
                yield list(listed.get("items") or [])
                token = str((listed.get("metadata") or {}).get("continue") or "")
                if not token:
                    break

    async def read_object(self, list_path: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object of a list path such as `/apis/<group>/<version>/<plural>`, as a plain dict; None
        when the API server says it does not exist (404). Raises `TransientApiError` when it could not
        say, `ListRefusedError` when it refuses to (RBAC)."""
        path = f"{_namespaced(list_path, namespace)}/{name}"
        try:
            return await self._call(self._get_json, path, [])
        except NotFoundError:
            return None

    def _get_json(
        self, path: str, query: list[tuple[str, str]], _request_timeout: Any = None
    ) -> dict[str, Any]:
        request = self._api_client.param_serialize(
            "GET",
            path,
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self._api_client.call_api(*request, _request_timeout=_request_timeout)
        response.read()
        if response.status == 404:
            raise NotFoundError(f"{path}: 404 {response.reason}")
        if response.status in (401, 403):
            raise ListRefusedError(f"{path}: {response.status} {response.reason}")
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason)
        return cast(dict[str, Any], json.loads(response.data or b"{}"))

    async def read_live_config(self, namespace: str) -> LiveConfig | None:
        """The stored RouterConfig of a namespace, or None when there is none."""
        try:
            cm = await self._call(self._core.read_namespaced_config_map, CONFIGMAP_NAME, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return live_config_from(cm.data or {})

    async def apply_config(
        self, namespace: str, config: RouterConfig, sources: Mapping[str, int]
    ) -> dict[str, Any]:
        """Server-side apply the namespace's RouterConfig ConfigMap (we own every field we set); returns
        the ConfigMap as stored."""
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CONFIGMAP_NAME,
                "namespace": namespace,
                "labels": dict(MANAGED_BY),
                "annotations": {CONFIG_VERSION_ANNOTATION: config.version},
            },
            # One key per schema the config renders faithfully (sidecars mount the newest they read);
            # server-side apply removes a key this manager wrote before and leaves out now.
            "data": {
                **stored_documents(config.document()),
                SOURCES_KEY: json.dumps(dict(sorted(sources.items())), separators=(",", ":")),
            },
        }
        path = f"/api/v1/namespaces/{namespace}/configmaps/{CONFIGMAP_NAME}"
        query = f"?fieldManager={FIELD_MANAGER}&force=true"
        stored = await self._writer.request("PATCH", path + query, body, "application/apply-patch+yaml")
        if stored is None:
            raise TransientApiError(f"apply of {namespace}/{CONFIGMAP_NAME}: 404 (namespace going away?)")
        return stored

    async def delete_config(self, namespace: str) -> bool:
        """Delete the namespace's ConfigMap; True when something was deleted."""
        try:
            await self._call(self._core.delete_namespaced_config_map, CONFIGMAP_NAME, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def patch_status(
        self,
        kind: type[Resource],
        namespace: str,
        name: str,
        patch: dict[str, Any],
        resource_version: str | None = None,
    ) -> dict[str, Any] | None:
        """JSON-merge-patch the status subresource (only the fields in `patch`; None removes a field).
        With `resource_version`, only if the object is still at that version. Returns the object as
        stored, or None when it was not written: it is gone, or changed since (a conflict: the caller's
        view is stale, and the change that moved it brings a fresh pass)."""
        body: dict[str, Any] = {"status": patch}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{kind.plural}/{name}/status"
        query = f"?fieldManager={FIELD_MANAGER}"
        try:
            # None: deleted meanwhile, nothing to report on
            return await self._writer.request("PATCH", path + query, body, "application/merge-patch+json")
        except TransientApiError as exc:
            cause = exc.__cause__
            if resource_version and isinstance(cause, ApiException) and cause.status == 409:
                log.info("status of %s %s/%s changed meanwhile; not written", kind.kind_name, namespace, name)
                return None
            raise

    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Pods of a namespace matching a label selector, as plain dicts."""
        result = await self._call(self._core.list_namespaced_pod, namespace, label_selector=selector)
        return [self._api_client.sanitize_for_serialization(pod) for pod in result.items]

    async def read_secret_key(self, namespace: str, name: str, key: str) -> str:
        """The decoded value of one key of a Secret; KeyError when the Secret or key is missing."""
        try:
            secret = await self._call(self._core.read_namespaced_secret, name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise KeyError(f"Secret {namespace}/{name} not found") from exc
            if exc.status == 403:
                raise SecretForbiddenError(namespace, name) from exc
            raise
        value = (secret.data or {}).get(key)
        if value is None:
            raise KeyError(f"Secret {namespace}/{name} has no key {key!r}")
        return base64.b64decode(value).decode()

    async def ensure_secret_key(
        self, namespace: str, name: str, key: str, generate: Callable[[], str]
    ) -> str:
        """The value of `key` in Secret `name`, creating the Secret with a generated value if missing
        (the value created is returned as is: reading it back would be one more API call per namespace
        on a cold start)."""
        for _ in range(3):
            try:
                secret = await self._call(self._core.read_namespaced_secret, name, namespace)
                value = (secret.data or {}).get(key)
                if value:
                    return base64.b64decode(value).decode()
                raise RuntimeError(f"Secret {namespace}/{name} has no key {key!r}")
            except ApiException as exc:
                if exc.status != 404:
                    raise
            value = generate()
            body = client.V1Secret(
                metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=dict(MANAGED_BY)),
                string_data={key: value},
                type="Opaque",
            )
            try:
                await self._call(self._core.create_namespaced_secret, namespace, body)
                return value
            except (ApiException, TransientApiError) as exc:
                # Another operator replica created it first: read theirs on the next round.
                if not isinstance(exc, TransientApiError) and exc.status != 409:
                    raise
        raise TransientApiError(f"Secret {namespace}/{name} could not be read or created")

    async def record_event(
        self, obj: Mapping[str, Any], reason: str, message: str, warning: bool = False
    ) -> None:
        """Create a core/v1 Event on `obj` (best effort: a lost Event must not stop reconciliation)."""
        meta = obj.get("metadata", {})
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        # A plain dict (see `RestWriter`: a cold start records an Event for each of thousands of objects).
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "generateName": f"{meta.get('name', 'modelroute')}.",
                "namespace": meta.get("namespace"),
            },
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": "Warning" if warning else "Normal",
            "source": {"component": FIELD_MANAGER},
            "reportingComponent": FIELD_MANAGER,
            "reportingInstance": FIELD_MANAGER,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            path = f"/api/v1/namespaces/{meta.get('namespace')}/events"
            await self._writer.request("POST", path, event, "application/json")
        except (ApiException, TransientApiError) as exc:
            log.warning(
                "could not record event %s on %s/%s: %s", reason, obj.get("kind"), meta.get("name"), exc
            )
