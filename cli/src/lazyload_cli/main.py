"""The `lazyload` command: `demo`, `up`, and views of what lazyload learned."""

from __future__ import annotations

import asyncio
import enum
import importlib.metadata
import json
import signal
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer
import yaml
from rich.console import Console

from lazyload_cli import access
from lazyload_cli import demo as demo_module
from lazyload_cli import events as events_module
from lazyload_cli import explain as explain_module
from lazyload_cli import fences as fence_api
from lazyload_cli import graph as graph_module
from lazyload_cli import status as status_module
from lazyload_cli.stack import Stack, StackConfig, StackError

app = typer.Typer(
    help="lazyload: Istio Sidecars learned from real traffic.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _print_version(value: bool) -> None:
    if value:
        try:
            version = importlib.metadata.version("lazyload-cli")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        console.print(f"lazyload {version}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """lazyload: Istio Sidecars learned from real traffic."""


class KubeKind(enum.StrEnum):
    """Which Kubernetes API `lazyload up` starts."""

    emulator = "emulator"
    real = "real"

    @property
    def literal(self) -> Literal["emulator", "real"]:
        return "real" if self is KubeKind.real else "emulator"


def _wait_for_signal(stack: Stack) -> None:
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(0.5):
        for name in stack.supervise():
            console.print(f"[yellow]{name} exited; restarted (endpoints.json has its new pid)")


@app.command()
def up(
    state_dir: Annotated[Path, typer.Option(help="Where logs, data and endpoints.json go.")],
    host: Annotated[str, typer.Option(help="Address every component binds.")] = "127.0.0.1",
    nats_port: Annotated[int | None, typer.Option(envvar="LAZYLOAD_UP_NATS_PORT")] = None,
    kube_port: Annotated[int | None, typer.Option(envvar="LAZYLOAD_UP_KUBE_PORT")] = None,
    als_port: Annotated[int | None, typer.Option(envvar="LAZYLOAD_UP_ALS_PORT")] = None,
    xds_port: Annotated[int | None, typer.Option(envvar="LAZYLOAD_UP_XDS_PORT")] = None,
    listener_port: Annotated[int | None, typer.Option(envvar="LAZYLOAD_UP_LISTENER_PORT")] = None,
    kube: Annotated[
        KubeKind,
        typer.Option(
            envvar="LAZYLOAD_UP_KUBE",
            help="emulator: the local Kubernetes API emulator; real: etcd, kube-apiserver and "
            "kube-controller-manager (built by `make setup`).",
        ),
    ] = KubeKind.emulator,
    secure: Annotated[
        bool,
        typer.Option(
            envvar="LAZYLOAD_UP_SECURE",
            help="Mutual TLS on the ALS port: a private CA in <state-dir>/als-tls, only the "
            "global-sidecar's client certificate may stream (endpoints.json: als_tls).",
        ),
    ] = False,
) -> None:
    """Start the stack (no demo traffic) and keep it up until Ctrl-C or SIGTERM."""
    config = StackConfig(
        kube=kube.literal,
        secure=secure,
        state_dir=state_dir,
        host=host,
        nats_port=nats_port,
        kube_port=kube_port,
        als_port=als_port,
        xds_port=xds_port,
        listener_port=listener_port,
    )
    stack = Stack(config, progress=lambda m: console.print(f"[dim]{m}"))
    try:
        with stack:
            console.print(f"[green]lazyload is up[/]; endpoints in {state_dir / 'endpoints.json'}")
            console.print_json(json.dumps(stack.endpoints))
            console.print(f"kubectl: KUBECONFIG={stack.kubeconfig} kubectl get sidecars -A")
            _wait_for_signal(stack)
    except StackError as e:
        console.print(f"[red]{e}")
        raise typer.Exit(1) from e
    console.print("stopped")


@app.command()
def demo(
    keep_running: Annotated[bool, typer.Option(help="Keep the stack up afterwards.")] = False,
    state_dir: Annotated[Path | None, typer.Option(help="Default: a temporary directory.")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for learning.")] = 60.0,
) -> None:
    """Run the stack, send bookinfo-like traffic, and show the ServiceFences and Sidecars learned."""
    with tempfile.TemporaryDirectory(prefix="lazyload-demo-") as tmp:
        stack = Stack(
            StackConfig(state_dir=state_dir or Path(tmp)),
            progress=lambda m: console.print(f"[dim]{m}"),
        )
        try:
            with stack:
                learned, done = asyncio.run(
                    demo_module.run_traffic(stack.endpoints, console, timeout=timeout)
                )
                demo_module.print_results(stack.endpoints, learned, console)
                if not done:
                    console.print(
                        "[red]not every dependency was learned in time; logs in "
                        f"{stack.endpoints['logs']}"
                    )
                    raise typer.Exit(1)
                if keep_running:
                    state = stack.config.state_dir
                    console.print(
                        f"stack is up; try next: lazyload explain default/productpage details "
                        f"--state-dir {state}, lazyload graph --serve --state-dir {state}, "
                        f"lazyload status --state-dir {state}, lazyload events watch "
                        f"--state-dir {state}, lazyload fences list --state-dir {state}, "
                        f"lazyload fences reset default/productpage --state-dir {state}, "
                        f"KUBECONFIG={stack.kubeconfig} kubectl get sidecars -A; Ctrl-C stops it",
                        soft_wrap=True,
                    )
                    _wait_for_signal(stack)
                else:
                    console.print(
                        "try next: lazyload demo --keep-running --state-dir ./state, then "
                        "lazyload explain default/productpage details --state-dir ./state, "
                        "lazyload graph --serve --state-dir ./state, lazyload status "
                        "--state-dir ./state, lazyload fences list --state-dir ./state",
                        soft_wrap=True,
                    )
        except StackError as e:
            console.print(f"[red]{e}")
            raise typer.Exit(1) from e


fences_app = typer.Typer(
    help="What the fence-reconciler keeps: list fences, reset them.", no_args_is_help=True
)
app.add_typer(fences_app, name="fences")

AdminOption = Annotated[
    str | None,
    typer.Option(
        "--admin",
        envvar="LAZYLOAD_RECONCILER_ADMIN",
        help="Base URL of fence-reconciler's admin API.",
    ),
]
StateOption = Annotated[
    Path | None, typer.Option(help="A `lazyload up` state dir: its endpoints.json gives --admin.")
]


TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="LAZYLOAD_ADMIN_TOKEN",
        help="Bearer token for the reset (default with --state-dir: the stack's admin token).",
    ),
]


# Exit codes (2 is typer's usage error): scripts can tell these apart without parsing text.
EXIT_FAILED = 1
EXIT_NO_STATE = 3
EXIT_UNKNOWN_FENCE = 4
EXIT_UNREACHABLE = 5


def _fail(message: str, code: int) -> typer.Exit:
    """Print `message` as one line on stderr; the `typer.Exit` to raise with `code`."""
    Console(stderr=True).print(f"[red]lazyload: {message}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def _endpoints(state_dir: Path) -> dict[str, object]:
    try:
        return access.read_endpoints(state_dir)
    except access.AccessError as e:
        raise _fail(str(e), e.code) from e


def _admin_token(token: str | None, state_dir: Path | None) -> str | None:
    if token:
        return token
    if state_dir is not None:
        path = _endpoints(state_dir).get("admin_token_file")
        if path:
            return Path(str(path)).read_text().strip()
    return None


def _admin_url(admin: str | None, state_dir: Path | None) -> str:
    if admin:
        return admin
    if state_dir is not None:
        admins = _endpoints(state_dir).get("admin")
        if not isinstance(admins, dict) or "fence-reconciler" not in admins:
            raise _fail(f"{state_dir}/endpoints.json has no admin.fence-reconciler", EXIT_NO_STATE)
        return str(admins["fence-reconciler"])
    raise typer.BadParameter("give --admin URL or --state-dir DIR")


def _api_failure(e: fence_api.FenceApiError) -> typer.Exit:
    if e.status is None:
        return _fail(f"cannot reach the fence-reconciler: {e}", EXIT_UNREACHABLE)
    if e.status == 404:
        return _fail(f"no such fence: {e}", EXIT_UNKNOWN_FENCE)
    return _fail(str(e), EXIT_FAILED)


def _reconciler(
    admin: str | None,
    state_dir: Path | None,
    kubeconfig: Path | None,
    context: str | None,
    lazyload_namespace: str,
    *,
    resetting: bool = False,
    token: str | None = None,
) -> fence_api.Reconciler:
    """The fence-reconciler's admin API: --admin or --state-dir's, else the cluster's through
    the pod proxy; `resetting`: with the bearer token a reset is authorized by."""
    if admin or state_dir is not None:
        bearer = _admin_token(token, state_dir) if resetting else None
        return fence_api.Reconciler(url=_admin_url(admin, state_dir), token=bearer)
    target = _target(None, kubeconfig, context, lazyload_namespace)
    if not resetting:
        return fence_api.Reconciler(target=target)
    bearer = token or target.bearer_token()
    if not bearer:
        raise _fail(
            "a reset needs a bearer token the fence-reconciler can review, and the "
            "kubeconfig's user has none (a client certificate?): give --token, e.g. "
            "$(kubectl create token <service account> -n <namespace>)",
            EXIT_FAILED,
        )
    return fence_api.Reconciler(target=target, token=bearer)


@fences_app.command("list")
def fences_list(
    admin: AdminOption = None,
    state_dir: StateOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    lazyload_namespace: LazyloadNamespaceOption = "mesh-operator",
) -> None:
    """List every ServiceFence with its revision and hosts (--admin, --state-dir, else the
    cluster of --kubeconfig/--context through the API server's pod proxy)."""
    try:
        items = _reconciler(admin, state_dir, kubeconfig, context, lazyload_namespace).fences()
    except fence_api.FenceApiError as e:
        raise _api_failure(e) from e
    except access.AccessError as e:
        raise _fail(str(e), e.code) from e
    console.print_json(json.dumps(items))


@fences_app.command("reset")
def fences_reset(
    fences: Annotated[
        list[str] | None,
        typer.Argument(help="NAMESPACE/NAME of each ServiceFence to reset.", show_default=False),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Reset every fence of --namespace instead.")
    ] = False,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="With --all: whose fences.")
    ] = None,
    admin: AdminOption = None,
    state_dir: StateOption = None,
    token: TokenOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    lazyload_namespace: LazyloadNamespaceOption = "mesh-operator",
) -> None:
    """Forget fences' learned hosts (spec hosts stay); their Sidecars follow. One FENCE prints
    its detail, several (or --all -n NAMESPACE) a list; a fence that fails does not stop the
    others, and the exit code is the first failure's. Against a cluster the token is --token or
    the kubeconfig's own bearer token, and its user needs `update servicefences/status` in each
    fence's namespace."""
    refs = [_split(ref, "FENCE") for ref in fences or []]
    if every == bool(refs) or every != bool(namespace):
        raise typer.BadParameter("give NAMESPACE/NAME... or --all --namespace NAMESPACE")
    try:
        reconciler = _reconciler(
            admin, state_dir, kubeconfig, context, lazyload_namespace, resetting=True, token=token
        )
        if namespace is not None:
            refs = reconciler.in_namespace(namespace)
            if not refs:
                Console(stderr=True).print(f"no fences in namespace {namespace}", highlight=False)
    except fence_api.FenceApiError as e:
        raise _api_failure(e) from e
    except access.AccessError as e:
        raise _fail(str(e), e.code) from e
    details, failure = [], None
    for ns, name in refs:
        try:
            details.append(reconciler.reset(ns, name))
        except fence_api.FenceApiError as e:
            failure = failure or _api_failure(e)
        except access.AccessError as e:
            failure = failure or _fail(str(e), e.code)
    one = len(fences or []) == 1
    if details or not one:
        console.print_json(json.dumps(details[0] if one else details))
    if failure is not None:
        raise failure


# -- explain, status, graph, events: against a local stack or a cluster -------------------

OutputOption = Annotated[str, typer.Option("--output", "-o", help="human (default), json or yaml.")]
ClusterStateOption = Annotated[
    Path | None,
    typer.Option(help="A `lazyload up` state dir (else the cluster of --kubeconfig/--context)."),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        envvar="KUBECONFIG", help="Kubeconfig of the cluster (default: in-cluster, ~/.kube/config)."
    ),
]
ContextOption = Annotated[str | None, typer.Option(help="Context of the kubeconfig.")]
LazyloadNamespaceOption = Annotated[
    str, typer.Option(help="Namespace lazyload's pods run in (a cluster).")
]
EXIT_UNHEALTHY = 6


def _target(
    state_dir: Path | None, kubeconfig: Path | None, context: str | None, namespace: str
) -> access.Target:
    try:
        if state_dir is not None:
            return access.Target.local(state_dir)
        return access.Target.cluster(kubeconfig, context, namespace)
    except access.AccessError as e:
        raise _fail(str(e), e.code) from e


def _print(data: object, output: str, human: Callable[[], None]) -> None:
    if output == "json":
        typer.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    elif output == "yaml":
        typer.echo(yaml.safe_dump(data, sort_keys=True), nl=False)
    elif output in ("human", ""):
        human()
    else:
        raise typer.BadParameter(f"unknown output {output!r}", param_hint="--output")


def _split(ref: str, what: str) -> tuple[str, str]:
    namespace, sep, name = ref.partition("/")
    if not sep or not namespace or not name:
        raise typer.BadParameter("expected NAMESPACE/NAME", param_hint=what)
    return namespace, name


@app.command("explain")
def explain_command(
    ref: Annotated[str, typer.Argument(metavar="NS/WORKLOAD", help="A Service or workload.")],
    host: Annotated[str | None, typer.Argument(help="A host to explain (in or not).")] = None,
    state_dir: ClusterStateOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    lazyload_namespace: LazyloadNamespaceOption = "mesh-operator",
    output: OutputOption = "human",
) -> None:
    """Which fence applies, its Sidecar and whether it is in sync, every host with its reason;
    with HOST, why it is or is not there."""
    namespace, name = _split(ref, "NS/WORKLOAD")
    target = _target(state_dir, kubeconfig, context, lazyload_namespace)
    try:
        out = explain_module.explain(target, namespace, name, host)
    except access.AccessError as e:
        raise _fail(str(e), e.code) from e
    if out["fence"] is None and not out["decisions"] and not out["rejections"]:
        raise _fail(
            f"caller unknown: no ServiceFence applies to {ref} and lazyload decided nothing "
            "about it",
            EXIT_UNKNOWN_FENCE,
        )
    _print(out, output, lambda: explain_module.render(out, console))


@app.command("status")
def status_command(
    state_dir: ClusterStateOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    lazyload_namespace: LazyloadNamespaceOption = "mesh-operator",
    output: OutputOption = "human",
) -> None:
    """Services ready, consumer lag, fences and Sidecars in sync, first call -> Sidecar latency,
    dead letters of the last hour. Exits 6 when a service is not ready or a fence is failing."""
    target = _target(state_dir, kubeconfig, context, lazyload_namespace)
    try:
        report = status_module.status(target)
    except access.AccessError as e:
        raise _fail(str(e), e.code) from e
    _print(report, output, lambda: status_module.render(report, console))
    if not status_module.healthy(report):
        raise typer.Exit(EXIT_UNHEALTHY)


@app.command("graph")
def graph_command(
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace's services.")
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", help="dot (default), mermaid, json or yaml.")
    ] = "dot",
    serve: Annotated[
        bool, typer.Option(help="Serve the graph page on --port until Ctrl-C instead.")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of --serve (0: a free one).")] = 8765,
    bind: Annotated[str, typer.Option(help="Address of --serve.")] = "127.0.0.1",
    state_dir: ClusterStateOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
    lazyload_namespace: LazyloadNamespaceOption = "mesh-operator",
) -> None:
    """The dependency graph (caller -> host, from the fences), or a page that draws it."""
    target = _target(state_dir, kubeconfig, context, lazyload_namespace)
    if serve:
        server = graph_module.serve(target, bind, port)
        query = f"?namespace={namespace}" if namespace else ""
        typer.echo(f"graph page: http://{bind}:{server.server_address[1]}/{query}", err=False)
        sys.stdout.flush()
        stopping = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stopping.set())
        stopping.wait()
        server.shutdown()
        return
    try:
        graph = graph_module.only_namespace(graph_module.read(target), namespace)
    except access.AccessError as e:
        raise _fail(str(e), e.code) from e
    if output == "dot":
        typer.echo(graph_module.to_dot(graph), nl=False)
    elif output == "mermaid":
        typer.echo(graph_module.to_mermaid(graph), nl=False)
    else:
        _print(graph, output if output != "human" else "json", lambda: None)


events_app = typer.Typer(
    help="The event topics (fence, sidecar, dead letters).", no_args_is_help=True
)
app.add_typer(events_app, name="events")


class EventKind(enum.StrEnum):
    fence = "fence"
    sidecar = "sidecar"
    dlq = "dlq"


@events_app.command("watch")
def events_watch(
    kind: Annotated[
        list[EventKind] | None,
        typer.Option("--kind", help="fence, sidecar or dlq; repeatable (default: fence, sidecar)."),
    ] = None,
    namespace: Annotated[
        str | None, typer.Option("--namespace", "-n", help="Only this namespace's events.")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="A `lazyload up` state dir: its NATS and observer.")
    ] = None,
    nats_url: Annotated[str | None, typer.Option(help="NATS URL (instead of --state-dir).")] = None,
    nats_creds: Annotated[Path | None, typer.Option(help="A NATS .creds file.")] = None,
    nats_nkey: Annotated[Path | None, typer.Option(help="A NATS NKey seed file.")] = None,
    output: OutputOption = "human",
    count: Annotated[int, typer.Option(help="Stop after this many events (0: never).")] = 0,
    timeout: Annotated[float, typer.Option(help="Stop after this many seconds (0: never).")] = 0.0,
) -> None:
    """Print fence, Sidecar and dead-letter events as they happen, one line each."""
    kinds = [k.value for k in kind] if kind else ["fence", "sidecar"]
    if nats_url:
        options: dict[str, object] = {"servers": [nats_url]}
    elif state_dir is not None:
        try:
            options = access.nats_connect_options(access.read_endpoints(state_dir))
        except access.AccessError as e:
            raise _fail(str(e), e.code) from e
    else:
        raise typer.BadParameter("give --state-dir DIR or --nats-url URL")
    if nats_creds is not None:
        options["user_credentials"] = str(nats_creds)
    if nats_nkey is not None:
        options["nkeys_seed"] = str(nats_nkey)
    if output not in ("human", "json"):
        raise typer.BadParameter("events are printed as human lines or json lines", param_hint="-o")

    def emit(text: str) -> None:
        typer.echo(text)
        sys.stdout.flush()

    try:
        asyncio.run(
            events_module.watch(
                options,
                kinds,
                namespace,
                emit,
                as_json_lines=output == "json",
                count=count,
                timeout=timeout,
                ready=lambda: Console(stderr=True).print(
                    f"[dim]watching {', '.join(kinds)}", highlight=False
                ),
            )
        )
    except KeyboardInterrupt:
        return
    except Exception as e:  # refused, unreachable: one line
        hint = ""
        if "permissions violation" in str(e):
            hint = " (give --nats-nkey or --nats-creds of an identity that may subscribe to it)"
        raise _fail(f"NATS: {type(e).__name__}: {e}{hint}", EXIT_UNREACHABLE) from e


def main() -> None:
    app()
