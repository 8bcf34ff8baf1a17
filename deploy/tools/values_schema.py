"""Generate deploy/helm/lazyload/values.schema.json (runs in the main `.venv`).

    .venv/bin/python deploy/tools/values_schema.py [--check]

The chart's layout is written here; each service's `config` block is derived from its settings
model (only the settings the chart does not manage itself), so a misspelt or mistyped setting
fails at install time.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import settings_catalog as catalog

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "deploy" / "helm" / "lazyload" / "values.schema.json"

# values key -> service
COMPONENTS = {
    "accesslogIngest": "accesslog-ingest",
    "fenceReconciler": "fence-reconciler",
    "sidecarWriter": "sidecar-writer",
    "globalPilot": "global-pilot",
}
# Settings the chart sets itself (from other values), so they are not allowed in `config`.
MANAGED = {
    ("nats", "url"),
    ("nats", "user"),
    ("nats", "password"),
    ("nats", "token"),
    ("nats", "nkey_seed_file"),
    ("nats", "creds_file"),
    ("nats", "tls_ca_file"),
    ("nats", "tls_cert_file"),
    ("nats", "tls_key_file"),
    ("kube", "kubeconfig"),
    ("kube", "context"),
    ("admin", "host"),
    ("admin", "port"),
    ("mesh", "cluster_domain"),
    ("mesh", "istio_namespace"),
    ("mesh", "global_sidecar_namespace"),
    ("mesh", "global_sidecar_service"),
    ("global_sidecar", "revision"),
    ("fence", "liveness_source"),
    ("grpc", "port"),
    ("xds", "port"),
    ("listener", "ports"),
    ("als", "host"),
    ("global_sidecar", "mode"),
    ("global_sidecar", "namespaces"),
    ("global_sidecar", "service_name"),
    ("als", "port"),
    ("als", "tls_ca_file"),
    ("als", "tls_cert_file"),
    ("als", "tls_key_file"),
    ("als", "tls_server_name"),
    ("reporter",),
    ("sidecar", "gitops_dir"),  # the gitops sink needs a volume the chart does not mount
}


def _type(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _type(inner[0]) if len(inner) == 1 else {}
    if origin is typing.Literal:
        return {"enum": list(args)}
    if origin in (list, tuple):
        item = _type(args[0]) if args else {}
        return {"type": "array", "items": item}
    return {
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
    }.get(annotation, {"type": "string"})


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        out["required"] = required
    return out


def config_schema(service: str) -> dict[str, Any]:
    groups: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for s in catalog.settings(service):
        if s.path in MANAGED:
            continue
        schema = {**_type(s.annotation), "description": s.description}
        if len(s.path) == 1:
            top[s.path[0]] = schema
        else:
            groups.setdefault(s.path[0], {})[s.path[1]] = schema
    props = {group: _obj(fields) for group, fields in groups.items()}
    return _obj({**props, **top})


PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
ANY_OBJ = {"type": "object"}
ANY_LIST = {"type": "array"}
IMAGE = _obj({"repository": {"type": "string", "minLength": 1}, "tag": {"type": "string"}})
PDB = _obj(
    {
        "enabled": {"type": "boolean"},
        "minAvailable": {"type": ["integer", "string"]},
        "maxUnavailable": {"type": ["integer", "string"]},
    }
)
HPA = _obj(
    {
        "enabled": {"type": "boolean"},
        "minReplicas": {"type": "integer", "minimum": 1},
        "maxReplicas": {"type": "integer", "minimum": 1},
        "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1, "maximum": 100},
    }
)
RESOURCES = _obj({"requests": ANY_OBJ, "limits": ANY_OBJ, "claims": ANY_LIST})
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
# Where and how each pod runs (every Deployment of the chart).
POD_PLACEMENT = {
    "podAnnotations": STRINGS,
    "podLabels": STRINGS,
    "priorityClassName": {"type": "string"},
    "topologySpreadConstraints": {
        "type": "array",
        "items": {"type": "object", "required": ["maxSkew", "topologyKey", "whenUnsatisfiable"]},
    },
    "nodeSelector": STRINGS,
    "tolerations": ANY_LIST,
    "affinity": ANY_OBJ,
}
MONITORING = _obj(
    {
        "podMonitor": _obj(
            {
                "enabled": {"type": "boolean"},
                "labels": STRINGS,
                "interval": {"type": "string", "pattern": r"^[0-9]+(ms|s|m|h)$"},
            }
        ),
        "prometheusRule": _obj(
            {
                "enabled": {"type": "boolean"},
                "labels": STRINGS,
                "firstCallToSidecarP99Seconds": {"type": "number", "exclusiveMinimum": 0},
                "consumerPendingMessages": {"type": "integer", "minimum": 1},
                "kubeRequestP99Seconds": {"type": "number", "exclusiveMinimum": 0},
            }
        ),
        "grafanaDashboard": _obj(
            {"enabled": {"type": "boolean"}, "namespace": {"type": "string"}, "labels": STRINGS}
        ),
    }
)


def component(service: str) -> dict[str, Any]:
    props: dict[str, Any] = {
        "enabled": {"type": "boolean"},
        "image": IMAGE,
        "replicas": {"type": "integer", "minimum": 0},
        "adminPort": PORT,
        "resources": RESOURCES,
        "podDisruptionBudget": PDB,
        "autoscaling": HPA,
        "config": config_schema(service),
        "extraEnv": {"type": "array", "items": {"type": "object", "required": ["name"]}},
        **POD_PLACEMENT,
    }
    if service == "accesslog-ingest":
        props["grpcPort"] = PORT
    if service == "global-pilot":
        props["xdsPort"] = PORT
    return _obj(props, ["enabled", "image", "replicas", "adminPort"])


def schema() -> dict[str, Any]:
    dns = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"}
    global_sidecar = _obj(
        {
            "enabled": {"type": "boolean"},
            "mode": {"enum": ["cluster", "namespace"]},
            "namespaces": {"type": "array", "items": dns, "uniqueItems": True},
            "inMesh": {"type": "boolean"},
            "image": IMAGE,
            "replicas": {"type": "integer", "minimum": 0},
            "listenerPorts": {"type": "array", "items": PORT, "minItems": 1, "uniqueItems": True},
            "resources": RESOURCES,
            "podDisruptionBudget": PDB,
            "autoscaling": HPA,
            **POD_PLACEMENT,
        },
        ["enabled", "mode", "listenerPorts"],
    )
    global_sidecar["if"] = {"properties": {"mode": {"const": "namespace"}}}
    global_sidecar["then"] = {"properties": {"namespaces": {"minItems": 1}}}
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "lazyload chart values (generated by deploy/tools/values_schema.py)",
        **_obj(
            {
                "global": ANY_OBJ,
                "nameOverride": {"type": "string"},
                "fullnameOverride": {"type": "string"},
                "image": _obj(
                    {
                        "registry": {"type": "string", "minLength": 1},
                        "tag": {"type": "string"},
                        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
                    }
                ),
                "imagePullSecrets": ANY_LIST,
                "nats": _obj(
                    {
                        "existingSecret": {"type": "string"},
                        "url": {"type": "string", "pattern": r"^(nats|tls)://"},
                        "user": {"type": "string"},
                        "password": {"type": "string"},
                        "token": {"type": "string"},
                        "auth": _obj(
                            {
                                "enabled": {"type": "boolean"},
                                "kind": {"enum": ["nkey", "creds"]},
                                "secrets": _obj(
                                    {
                                        name: {"type": "string"}
                                        for name in (
                                            "accesslog-ingest",
                                            "fence-reconciler",
                                            "sidecar-writer",
                                        )
                                    }
                                ),
                            }
                        ),
                        "tls": _obj(
                            {
                                "existingSecret": {"type": "string"},
                                "clientCert": {"type": "boolean"},
                            }
                        ),
                    }
                ),
                "mesh": _obj(
                    {
                        "clusterDomain": dns,
                        "istioNamespace": dns,
                        "istioRev": {
                            "type": "string",
                            "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
                        },
                    }
                ),
                "podSecurityContext": ANY_OBJ,
                "securityContext": ANY_OBJ,
                **{key: component(service) for key, service in COMPONENTS.items()},
                "globalSidecar": global_sidecar,
                "networkPolicy": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "monitoringNamespaceSelector": ANY_OBJ,
                        "adminFrom": {"type": "array", "items": ANY_OBJ},
                    }
                ),
                "monitoring": MONITORING,
                "userRoles": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "aggregateToDefaultRoles": {"type": "boolean"},
                    }
                ),
                "tests": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "namespace": {"type": "string"},
                        "timeoutSeconds": {"type": "integer", "minimum": 10},
                    }
                ),
                "sidecarAccessLogs": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "providers": {"type": "array", "items": dns},
                        "port": PORT,
                        "principals": {
                            "type": "array",
                            "items": {"type": "string", "minLength": 1},
                        },
                    }
                ),
                "alsTls": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "serverSecret": {"type": "string"},
                        "clientSecret": {"type": "string"},
                        "allowInsecure": {"type": "boolean"},
                    }
                ),
            }
        ),
    }


def text() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail when the file drifted")
    args = parser.parse_args(argv)
    if args.check:
        if not OUT.exists() or OUT.read_text() != text():
            print(f"{OUT} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text())
    print(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
