"""Watch-fed caches: the latest body of each object of one kind, by namespace, as the watch delivered it.

The reconciler, the syncer and the clocks read these instead of listing the API on every pass. A cache
is no state of its own: on a restart Kopf lists every watched kind before any handler runs, so it is
rebuilt from the API. Our own writes are put back as the API answered them (`put`), so a pass that
runs before the watch brings a write back sees the object as written (and does not write it, or record
its Event, twice).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Key = tuple[str, str]
"""(namespace, name)."""

NOT_SEEN: Any = object()
"""`take_previous` of a key no watch event came in for since the last take."""


def key_of(body: Mapping[str, Any]) -> Key:
    meta = body.get("metadata") or {}
    return (str(meta.get("namespace")), str(meta.get("name")))


def older(new: Mapping[str, Any], old: Mapping[str, Any]) -> bool:
    """Whether `new` is an older version of the object than `old`. Resource versions are opaque, but
    the API server's are etcd revisions (integers that only grow); anything else counts as newer."""
    a = str((new.get("metadata") or {}).get("resourceVersion", ""))
    b = str((old.get("metadata") or {}).get("resourceVersion", ""))
    return a.isdigit() and b.isdigit() and int(a) < int(b)


class ObjectCache:
    """Latest body of each object of one kind, with the body each watch event replaced."""

    def __init__(self, view: Callable[[Mapping[str, Any]], dict[str, Any]] = dict) -> None:
        self._view = view
        """What of a body is kept (all of it, or the few fields read: memory at 10,000 objects)."""
        self.bodies: dict[Key, dict[str, Any]] = {}
        self._by_namespace: dict[str, dict[str, dict[str, Any]]] = {}
        self._previous: dict[Key, dict[str, Any] | None] = {}
        """Key → the body before the first watch event not yet looked at (None: it was new)."""

    def observe(self, body: Mapping[str, Any], deleted: bool = False) -> Key:
        """Take in a watch event's body (an older one than held, e.g. behind our own write, is left)."""
        key = key_of(body)
        if deleted:
            self._drop(key)
            self._previous.pop(key, None)
            return key
        old = self.bodies.get(key)
        if old is not None and older(body, old):
            return key
        self._previous.setdefault(key, old)
        self._store(key, self._view(body))
        return key

    def put(self, body: Mapping[str, Any], create: bool = False, compare_before: bool = True) -> None:
        """Take in an object as one of our writes returned it, unless the watch brought a newer one, or
        (without `create`) the object is not held: a write answered after the watch said it was deleted
        must not bring it back. With `compare_before`, the watch event of this write is compared with
        the body before the write (as if the watch had brought it): a write of an input (health, a
        canary's weight) still asks for a pass; without, the event compares with the write itself."""
        key = key_of(body)
        old = self.bodies.get(key)
        if (old is None and create) or (old is not None and not older(body, old)):
            if compare_before:
                self._previous.setdefault(key, old)
            self._store(key, self._view(body))

    def take_previous(self, key: Key) -> dict[str, Any] | None:
        """The body the watch events since the last take replaced (None: the object is new);
        `NOT_SEEN` when no event came in since."""
        return self._previous.pop(key, NOT_SEEN)

    def get(self, key: Key) -> dict[str, Any] | None:
        return self.bodies.get(key)

    def in_namespace(self, namespace: str) -> list[dict[str, Any]]:
        """The namespace's objects, by name."""
        held = self._by_namespace.get(namespace) or {}
        return [held[name] for name in sorted(held)]

    def namespaces(self) -> set[str]:
        return set(self._by_namespace)

    def _store(self, key: Key, body: dict[str, Any]) -> None:
        self.bodies[key] = body
        self._by_namespace.setdefault(key[0], {})[key[1]] = body

    def _drop(self, key: Key) -> None:
        self.bodies.pop(key, None)
        held = self._by_namespace.get(key[0])
        if held is not None:
            held.pop(key[1], None)
            if not held:
                del self._by_namespace[key[0]]  # per-namespace state goes with the namespace
