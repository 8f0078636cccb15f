"""A Feast file registry that replaces ``registry.db`` atomically.

Feast 0.67's ``FileRegistryStore`` rewrites the registry in place (``open(path, "wb")``):
every materialize truncates the file, then writes it, so a reader (a serving replica
refreshing its registry) can read an empty or half-written file and fail to parse it. This
store writes the new registry beside it, fsyncs it and renames it over the old one: readers
see the old registry or the new one, whole. Writers still need one lock among themselves
(``features.store`` holds it around apply and materialize), or one overwrites the other.
"""

from __future__ import annotations

import uuid

from feast.infra.registry.file import FileRegistryStore
from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
from feast.utils import _utc_now

from data.atomic import write_bytes


class AtomicFileRegistryStore(FileRegistryStore):
    """``FileRegistryStore`` with write-to-temporary, fsync and rename."""

    def _write_registry(self, registry_proto: RegistryProto) -> None:
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(_utc_now())
        write_bytes(self._filepath, registry_proto.SerializeToString())
