"""The Kubernetes protobuf codec (`lazyload_kube_emulator.kubeproto`) on its own.

Covers: the bytes kubectl 1.37 sends for `kubectl create namespace x` decode to the JSON kubectl
would send (zero values of non-pointer fields dropped, as Go's `omitempty` does); pointer fields
keep their zero values; Go's JSON names (`$ref`, `x-kubernetes-*`) and inlined structs
(`Volume.volumeSource`, `Probe.handler`); JSON -> protobuf -> JSON gives back objects of every
built-in kind the emulator serves (with times, quantities, int-or-strings, bytes, CRD schemas);
watch frames; malformed bodies; and that the packaged schema covers every served kind and every
Go type with its own JSON form.
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest
from google.protobuf.message import Message
from lazyload_kube_emulator.kubeproto import MAGIC, ProtobufError, codec
from lazyload_kube_emulator.kubeproto.codec import ENVELOPES, UNKNOWN
from lazyload_kube_emulator.kubeproto.special import CONVERTERS, go_duration, parse_go_duration
from lazyload_kube_emulator.resources import BUILTIN_RESOURCES

# `kubectl create namespace x` (kubectl 1.37), as it reached the emulator
KUBECTL_NAMESPACE = (
    b'k8s\x00\n\x0f\n\x02v1\x12\tNamespace\x12\x19\n\x11\n\x01x\x12\x00\x1a\x00"\x00*\x002\x00'
    b'8\x00B\x00\x12\x00\x1a\x02\n\x00\x1a\x00"\x00'
)
CORE = "k8s.io.api.core.v1"
META = "k8s.io.apimachinery.pkg.apis.meta.v1"


def proto(full_name: str, raw: bytes = b"") -> Any:
    """A message of the packaged schema, parsed from raw (empty by default). Its class is built
    at run time from the descriptors (no generated module): its fields are unknown to pyright."""
    return codec().message_class(full_name).FromString(raw)


def envelope(api_version: str, kind: str, message: Message) -> bytes:
    unknown = proto(UNKNOWN)
    unknown.typeMeta.apiVersion, unknown.typeMeta.kind = api_version, kind
    unknown.raw = message.SerializeToString()
    return MAGIC + unknown.SerializeToString()


def roundtrip(obj: dict) -> dict:
    return codec().decode(codec().encode(obj))


def test_kubectl_namespace_decodes_to_what_kubectl_sends_as_json():
    # `kubectl create namespace x --dry-run=client -o json` prints exactly this
    assert codec().decode(KUBECTL_NAMESPACE) == {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "x"},
        "spec": {},
        "status": {},
    }


def test_zero_values_on_the_wire_follow_the_go_fields():
    """A Go client writes every non-pointer field; pointer fields only when set."""
    account = proto(f"{CORE}.ServiceAccount")
    meta = account.metadata
    meta.name, meta.namespace, meta.generateName, meta.generation = "robot", "", "", 0
    meta.creationTimestamp.SetInParent()  # a zero metav1.Time: an empty message
    account.automountServiceAccountToken = False  # *bool set to false
    decoded = codec().decode(envelope("v1", "ServiceAccount", account))
    assert decoded == {
        "kind": "ServiceAccount",
        "apiVersion": "v1",
        "metadata": {"name": "robot"},
        "automountServiceAccountToken": False,
    }
    # a field without omitempty stays, zero or not: RoleRef.apiGroup "" (core) is kept
    binding = proto("k8s.io.api.rbac.v1.RoleBinding")
    binding.metadata.name = "b"
    binding.roleRef.apiGroup, binding.roleRef.kind, binding.roleRef.name = "", "Role", "r"
    decoded = codec().decode(envelope("rbac.authorization.k8s.io/v1", "RoleBinding", binding))
    assert decoded["roleRef"] == {"apiGroup": "", "kind": "Role", "name": "r"}
    # a nil list without omitempty is null, as Go writes it (PolicyRule.verbs)
    role = proto("k8s.io.api.rbac.v1.Role")
    role.metadata.name = "r"
    role.rules.add().resources.append("pods")
    decoded = codec().decode(envelope("rbac.authorization.k8s.io/v1", "Role", role))
    assert decoded["rules"] == [{"verbs": None, "resources": ["pods"]}]


POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {
        "name": "web-0",
        "namespace": "shop",
        "uid": "0b5c1f8e-0000-4000-8000-000000000001",
        "resourceVersion": "42",
        "generation": 3,
        "creationTimestamp": "2026-01-02T03:04:05Z",
        "deletionTimestamp": "2026-01-02T03:05:00Z",
        "deletionGracePeriodSeconds": 0,
        "labels": {"app": "web"},
        "annotations": {"note": ""},
        "ownerReferences": [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": "web",
                "uid": "0b5c1f8e-0000-4000-8000-000000000002",
                "controller": True,
                "blockOwnerDeletion": False,
            }
        ],
        "finalizers": ["example.com/keep"],
    },
    "spec": {
        "serviceAccountName": "web",
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 0,
        "restartPolicy": "Always",
        "volumes": [
            {"name": "config", "configMap": {"name": "web", "defaultMode": 420}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
        "containers": [
            {
                "name": "web",
                "image": "nginx:1.27",
                "args": ["--port", "8080"],
                "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                "env": [
                    {"name": "MODE", "value": "fast"},
                    {
                        "name": "LEVEL",
                        "valueFrom": {"configMapKeyRef": {"name": "web", "key": "level"}},
                    },
                ],
                "resources": {
                    "limits": {"cpu": "500m", "memory": "128Mi"},
                    "requests": {"cpu": "100m"},
                },
                "readinessProbe": {
                    "httpGet": {"path": "/ready", "port": "http"},
                    "periodSeconds": 5,
                },
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "securityContext": {"runAsNonRoot": True, "runAsUser": 0, "privileged": False},
            }
        ],
    },
    "status": {
        "phase": "Running",
        "podIP": "10.0.0.7",
        "startTime": "2026-01-02T03:04:06Z",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "lastProbeTime": None,  # a zero metav1.Time without omitzero: null, as Go writes
                "lastTransitionTime": "2026-01-02T03:04:09Z",
            }
        ],
    },
}

OBJECTS = [
    POD,
    {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "type": "LoadBalancer",
            "selector": {"app": "web"},
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "ports": [
                {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "grpc", "port": 9000, "targetPort": 9001, "nodePort": 30001},
            ],
            "allocateLoadBalancerNodePorts": False,
            "sessionAffinity": "None",
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}},
    },
    {
        "kind": "Endpoints",
        "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "shop"},
        "subsets": [
            {
                "addresses": [{"ip": "10.0.0.7", "targetRef": {"kind": "Pod", "name": "web-0"}}],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }
        ],
    },
    {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "shop"},
        "data": {"level": "debug", "empty": ""},
        "binaryData": {"blob": base64.b64encode(bytes(range(256))).decode()},
        "immutable": False,
    },
    {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "shop"},
        "type": "Opaque",
        "data": {"password": base64.b64encode(b"\x00\xffs3cret").decode()},
    },
    {
        "kind": "ServiceAccount",
        "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "shop"},
        "automountServiceAccountToken": False,
        "imagePullSecrets": [{"name": "registry"}],
    },
    {
        "kind": "Event",
        "apiVersion": "v1",
        "metadata": {"name": "web.1", "namespace": "shop"},
        "involvedObject": {"kind": "Pod", "name": "web-0", "namespace": "shop"},
        "reason": "Started",
        "message": "Started container web",
        "source": {"component": "kubelet"},
        "firstTimestamp": "2026-01-02T03:04:05Z",
        "lastTimestamp": "2026-01-02T03:04:05Z",
        "eventTime": "2026-01-02T03:04:05.123456Z",
        "count": 1,
        "type": "Normal",
        "reportingComponent": "",
        "reportingInstance": "",
    },
    {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "shop", "labels": {"kubernetes.io/metadata.name": "shop"}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    },
    {
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": "web-abc", "namespace": "shop"},
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": ["10.0.0.7"],
                "conditions": {"ready": False, "serving": True},
                "nodeName": "node-1",
            }
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    },
    {
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {"name": "leader", "namespace": "shop"},
        "spec": {
            "holderIdentity": "",
            "leaseDurationSeconds": 0,
            "renewTime": "2026-01-02T03:04:05.000001Z",
            "leaseTransitions": 2,
        },
    },
    {
        "kind": "ClusterRole",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "reader"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods", "pods/status"], "verbs": ["get"]},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]},
        ],
    },
    {
        "kind": "RoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": {"name": "read", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "r"},
        "subjects": [{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}],
    },
    {
        "kind": "CustomResourceDefinition",
        "apiVersion": "apiextensions.k8s.io/v1",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Size", "type": "integer", "jsonPath": ".spec.size"}
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": False,
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {
                                            "type": "integer",
                                            "minimum": 1,
                                            "maximum": 10.5,
                                            "default": 3,
                                        },
                                        "color": {"type": "string", "enum": ["red", "blue"]},
                                        "port": {"x-kubernetes-int-or-string": True},
                                        "tags": {
                                            "type": "array",
                                            "items": {"type": "string"},
                                            "x-kubernetes-list-type": "set",
                                        },
                                        "labels": {
                                            "type": "object",
                                            "additionalProperties": {"type": "string"},
                                        },
                                        "extra": {"type": "object", "additionalProperties": False},
                                        "note": {"type": "string", "nullable": True},
                                    },
                                    "x-kubernetes-validations": [
                                        {"rule": "self.size <= 10", "message": "too big"}
                                    ],
                                },
                                "status": {
                                    "type": "object",
                                    "x-kubernetes-preserve-unknown-fields": True,
                                },
                            },
                        }
                    },
                }
            ],
        },
        "status": {
            "storedVersions": ["v1"],
            "acceptedNames": {"plural": "widgets", "kind": "Widget"},
            "conditions": [
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": "2026-01-02T03:04:05Z",
                }
            ],
        },
    },
    {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'widgets.example.com "w" is invalid',
        "reason": "Invalid",
        "details": {
            "name": "w",
            "group": "example.com",
            "kind": "widgets",
            "causes": [{"reason": "FieldValueInvalid", "message": "bad", "field": "spec.size"}],
        },
        "code": 422,
    },
    {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "gracePeriodSeconds": 0,
        "propagationPolicy": "Orphan",
        "preconditions": {"uid": "0b5c1f8e-0000-4000-8000-000000000001"},
    },
    {
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 0},
        "items": [{"metadata": {"name": "shop"}, "spec": {}, "status": {"phase": "Active"}}],
    },
]


@pytest.mark.parametrize("obj", OBJECTS, ids=[o["kind"] for o in OBJECTS])
def test_json_protobuf_json_gives_the_object_back(obj):
    assert roundtrip(obj) == obj


def test_go_json_names_and_inlined_structs():
    obj = roundtrip(POD)
    assert obj["spec"]["volumes"][0] == {
        "name": "config",
        "configMap": {"name": "web", "defaultMode": 420},
    }
    message = proto(f"{CORE}.Pod")
    codec().fill(message, POD)
    # in protobuf the inlined structs are messages of their own
    assert message.spec.volumes[0].volumeSource.configMap.localObjectReference.name == "web"
    assert message.spec.containers[0].readinessProbe.handler.httpGet.port.strVal == "http"
    assert message.spec.containers[0].resources.limits["cpu"].string == "500m"
    schema_class = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps"
    schema = proto(schema_class)
    codec().fill(schema, {"$ref": "#/x", "x-kubernetes-preserve-unknown-fields": True})
    assert schema.ref == "#/x" and schema.xKubernetesPreserveUnknownFields is True
    assert codec().to_json(schema) == {"$ref": "#/x", "x-kubernetes-preserve-unknown-fields": True}


def test_times_are_seconds_and_microseconds_in_utc():
    meta = proto(f"{META}.ObjectMeta")
    codec().fill(meta, {"creationTimestamp": "2026-01-02T04:04:05.9+01:00"})
    assert codec().to_json(meta) == {"creationTimestamp": "2026-01-02T03:04:05Z"}
    micro = proto(f"{META}.MicroTime")
    codec().fill(micro, "1970-01-01T00:00:00.000001Z")
    assert (micro.seconds, micro.nanos) == (0, 1000)
    assert codec().to_json(micro) == "1970-01-01T00:00:00.000001Z"


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1500, "1.5µs"),
        (300_000_000, "300ms"),
        (1_500_000_000, "1.5s"),
        (90 * 10**9, "1m30s"),
        (3600 * 10**9, "1h0m0s"),
        (-(3661 * 10**9), "-1h1m1s"),
    ],
)
def test_durations_are_go_duration_strings(nanoseconds, text):
    assert go_duration(nanoseconds) == text
    assert parse_go_duration(text) == nanoseconds


def test_watch_frame_is_length_prefixed_watch_event():
    frame = codec().watch_frame("ADDED", OBJECTS[7])
    (size,) = struct.unpack(">I", frame[:4])
    assert size == len(frame) - 4
    event = proto(f"{META}.WatchEvent", frame[4:])
    assert event.type == "ADDED"
    assert codec().decode(event.object.raw) == OBJECTS[7]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"kind": "Namespace"}', "does not start with the prefix"),
        (MAGIC + b"\xff\xff", "could not be decoded"),
        (KUBECTL_NAMESPACE.replace(b"\tNamespace", b"\tNamespacf"), 'no kind "Namespacf"'),
    ],
)
def test_malformed_bodies_are_refused(body, message):
    with pytest.raises(ProtobufError, match=message):
        codec().decode(body)


def test_custom_resources_have_no_protobuf_form():
    widget = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(ProtobufError, match='no kind "Widget"'):
        codec().encode(widget)


def test_objects_protobuf_cannot_carry_are_refused():
    with pytest.raises(ProtobufError, match="port"):
        codec().encode({**OBJECTS[1], "spec": {"ports": [{"port": "eighty"}]}})


def test_the_schema_covers_every_served_kind_and_custom_json_type():
    for info in BUILTIN_RESOURCES:
        for kind in (info.kind, info.list_kind):
            assert codec().kind_message(info.api_version("v1"), kind) is not None, kind
    assert codec().custom_json - ENVELOPES == set(CONVERTERS)


def test_the_packaged_schema_says_where_it_came_from():
    from importlib import resources

    table = json.loads(
        resources.files("lazyload_kube_emulator.kubeproto").joinpath("fields.json").read_text()
    )
    modules = table["source"]["modules"]
    assert set(modules) == {"k8s.io/api", "k8s.io/apimachinery", "k8s.io/apiextensions-apiserver"}
    assert {m["version"] for m in modules.values()} == {"v0.37.2"}
