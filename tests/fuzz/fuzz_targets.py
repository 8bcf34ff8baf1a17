"""Coverage-guided fuzzing of the input decoders (issue 19): the compiled ALS decoder (`_wire`),
the protobuf ALS decoder, the event codec and the host parser.

Invariant per target: any bytes give a valid value or the documented rejection
(`MalformedMessage`, `DecodeError`, `ValueError` for a port), never another exception, and
no invalid host gets past the reconciler's check of a decoded edge.

    python tests/fuzz/fuzz_targets.py [--seconds 60] [TARGET ...]

Runs under `atheris` when it is installed (coverage-guided); otherwise a mutational loop over
the seed corpus (random byte flips, inserts, truncations), so `make fuzz` always runs. A crash is
written to tests/fuzz/corpus/<target>/ and then fed to every run of test_fuzz_regressions.py.
"""

# atheris is optional (its stubs ship with pyright, the package only where installed):
# pyright: reportMissingModuleSource=false

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from lazyload_accesslog_ingest import parsing
from lazyload_common import codec, errors, events, hosts
from lazyload_fence_reconciler.consuming import invalid_reason

CORPUS = Path(__file__).parent / "corpus"


def fuzz_codec(data: bytes) -> None:
    try:
        event = codec.decode(data)
    except errors.DecodeError:
        return
    # the codec checks types and times; the reconciler's `invalid_reason` checks the names, so
    # an edge it lets through must name a valid host
    if (
        isinstance(event, events.DependencyObserved)
        and invalid_reason(event) is None
        and not hosts.is_valid_host(event.destination_host)
    ):
        raise AssertionError(f"invalid host accepted: {event.destination_host!r}")
    again = codec.decode(codec.encode(event))  # a decoded event round-trips
    if again != event:
        raise AssertionError(f"round trip changed the event: {event!r} -> {again!r}")


_EDGE = {
    "kind": "dependency",
    "schema_version": 1,
    "source_namespace": "default",
    "source_name": "productpage",
    "destination_host": "details.default.svc.cluster.local",
    "destination_port": 9080,
    "first_seen": 1.0,
}


def fuzz_edge_fields(data: bytes) -> None:
    """A well-formed edge whose fields the bytes overwrite (a field per 1+1+n bytes: which field,
    which type, the value), so the codec's field checks are reached, not just msgpack's."""
    edge, fields, rest = dict(_EDGE), sorted(events.DependencyObserved.model_fields), data
    while len(rest) >= 2:
        field, kind, size = fields[rest[0] % len(fields)], rest[1] % 5, rest[1] // 5 % 40
        raw, rest = rest[2 : 2 + size], rest[2 + size :]
        value = int.from_bytes(raw[:8], "big", signed=True)  # msgpack: 64 bits
        edge[field] = (
            raw.decode("utf-8", errors="replace"),
            value,
            value / 7.0 if kind % 2 else float.fromhex("1p1023") * value,
            None,
            raw,
        )[kind]
    fuzz_codec(codec_pack(edge))


def codec_pack(value: object) -> bytes:
    import msgpack

    packed = msgpack.packb(value, use_bin_type=True)
    assert isinstance(packed, bytes)  # a Packer returns None only with autoreset=False
    return packed


def fuzz_hosts(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    for check in (hosts.is_valid_host, hosts.is_valid_namespace, hosts.is_valid_domain):
        if not isinstance(check(text), bool):
            raise AssertionError(f"{check.__name__} returned a non-bool")
    try:
        host, port = hosts.split_host_port(text)
    except ValueError:
        return
    if port is not None and not 0 < port < 65536:
        raise AssertionError(f"port out of range accepted: {port}")
    hosts.service_of(host, "cluster.local")


def _als(decoder: str) -> Callable[[bytes], None]:
    make = parsing.DECODERS[decoder]

    def run(data: bytes) -> None:
        try:
            decoded = make(data)
            if decoded.kind is not None:
                for direction in (False, True):
                    keyed = decoded.group(direction)
                    if keyed.count < 0 or keyed.failed < 0:
                        raise AssertionError(f"negative counts: {keyed!r}")
        except parsing.MalformedMessage:
            return

    return run


TARGETS: dict[str, Callable[[bytes], None]] = {
    "codec": fuzz_codec,
    "codec-fields": fuzz_edge_fields,
    "hosts": fuzz_hosts,
    "als-protobuf": _als("protobuf"),
}
if "compiled" in parsing.DECODERS:
    TARGETS["als-compiled"] = _als("compiled")


def seeds(target: str) -> list[bytes]:
    folder = CORPUS / target
    found = sorted(folder.iterdir()) if folder.is_dir() else []
    return [p.read_bytes() for p in found] or [b""]


def save_crash(target: str, data: bytes) -> Path:
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"crash-{hashlib.sha256(data).hexdigest()[:16]}"
    path.write_bytes(data)
    return path


def _mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        if op == 0 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1:
            buf.insert(rng.randint(0, len(buf)), rng.randrange(256))
        elif op == 2 and buf:
            del buf[rng.randint(0, len(buf) - 1) :]
        else:
            buf += rng.randbytes(rng.randint(1, 16))
    return bytes(buf)


def fallback(name: str, run: Callable[[bytes], None], seconds: float) -> int:
    """Mutational fuzzing without atheris; the number of crashes found."""
    rng, pool, crashes, runs = random.Random(), seeds(name), 0, 0
    seen: set[str] = set()  # one kept input per distinct failure
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        data = _mutate(rng, rng.choice(pool))
        runs += 1
        try:
            run(data)
        except Exception as e:
            crashes += 1
            what = f"{type(e).__name__}: {str(e)[:80]}"
            if what not in seen:
                seen.add(what)
                print(f"{name}: {what} -> {save_crash(name, data)}", file=sys.stderr)
        else:
            if len(pool) < 256 and rng.random() < 0.01:
                pool.append(data)
    print(f"{name}: {runs} inputs in {seconds:.0f} s, {crashes} crash(es)")
    return crashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60.0, help="per target")
    parser.add_argument("targets", nargs="*", help=f"of {', '.join(TARGETS)} (default: all)")
    args = parser.parse_args(argv)
    names = args.targets or list(TARGETS)
    if unknown := set(names) - set(TARGETS):
        parser.error(f"no fuzz target {', '.join(sorted(unknown))}")
    try:
        import atheris  # noqa: F401  (optional: coverage-guided when installed)
    except ImportError:
        return 1 if sum(fallback(n, TARGETS[n], args.seconds) for n in names) else 0
    # atheris owns the process (it exits on the first crash): one target per process
    import subprocess

    failed = 0
    for name in names:
        failed |= subprocess.call(
            [sys.executable, __file__, "--atheris-one", name, str(args.seconds)]
        )
    return failed


def _atheris_one(name: str, seconds: str) -> None:
    import atheris

    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    atheris.Setup(
        [
            sys.argv[0],
            f"-max_total_time={int(float(seconds))}",
            f"-artifact_prefix={folder}/crash-",
        ],
        TARGETS[name],
    )
    atheris.Fuzz()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--atheris-one":
        _atheris_one(sys.argv[2], sys.argv[3])
    else:
        sys.exit(main())
