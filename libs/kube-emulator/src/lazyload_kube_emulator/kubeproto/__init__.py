"""Kubernetes protobuf (`application/vnd.kubernetes.protobuf`) for the built-in kinds.

`codec().decode(body)` turns what kubectl's typed commands send (`k8s\\x00` + a `runtime.Unknown`
holding the object) into the JSON object the emulator stores; `codec().encode(obj)` and
`codec().watch_frame(type, obj)` answer clients that accept only protobuf. The schema is
generated from the upstream Go modules by `scripts/generate_kube_proto.py` (see the README).
"""

from .codec import MAGIC, MEDIA_TYPE, Codec, codec
from .errors import ProtobufError

__all__ = ["MAGIC", "MEDIA_TYPE", "Codec", "ProtobufError", "codec"]
