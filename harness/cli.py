"""The `cachecert` command line: one subcommand per user task, each a thin layer over a module.

up / status / down manage an embedded cluster; run / rerun (alias reproduce) execute a workload;
check re-judges a stored history; report, ls, certify, compare present results, and ls also lists
what can be run (workloads, strategies, faults, plans). Errors a user can fix print one line and
exit with a distinct code (see core.verdict).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable

from core.verdict import Exit, UsageError
from harness.paths import MissingBinary


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's default exit code 2 would read as "unknown"
        self.print_usage(sys.stderr)
        print(f"cachecert: error: {message}", file=sys.stderr)
        sys.exit(Exit.USAGE)


# -- cluster commands ----------------------------------------------------------------------
def cmd_up(args: argparse.Namespace) -> int:
    from harness.cluster import ALL_SERVICES, Cluster, list_clusters
    from harness.lifecycle import graceful_signals

    if args.backend == "external" and args.cluster:  # a mistake in the file: one line, before anything starts
        from harness.clusterfile import ClusterFileError, load

        try:
            args.services = args.services or ",".join(load(args.cluster).services())
        except ClusterFileError as e:
            raise UsageError(str(e)) from None
    args.services = args.services or "redis,postgres,kafka"
    services = tuple(s.strip() for s in args.services.split(",") if s.strip())
    bad = [s for s in services if s not in ALL_SERVICES]
    if bad or not services:
        raise UsageError(f"unknown service {bad[0]!r} in --services" if bad else "--services is empty"
                         f" (valid: {', '.join(ALL_SERVICES)})")
    if args.port_base is not None and not 1024 <= args.port_base <= 65535 - 16:
        raise UsageError(f"--port-base {args.port_base} is out of range (1024-{65535 - 16})")
    clusters = list_clusters()
    running = [c for c in clusters if c["running"] and c.get("detached")]
    if running and not args.name:
        raise UsageError(f"a cluster is already running ({running[0]['id']}); run `cachecert down` first "
                         "or pass --name for a second one")
    same = [c for c in clusters if c["id"] == (args.name or "default") and c["running"]]
    if same:
        raise UsageError(f"cluster {same[0]['id']!r} is already running; run `cachecert down` first "
                         "or pick another --name")
    from harness.topology import TopologyError, resolve

    try:
        topology = resolve(None, args.topology, services)
    except TopologyError as e:
        raise UsageError(str(e)) from None
    cluster = Cluster(services=services, name=args.name or "default", detached=not args.foreground,
                      port_base=args.port_base, backend=args.backend, topology=topology, cluster_file=args.cluster)
    if (args.backend == "external") != bool(args.cluster):
        raise UsageError("--backend external needs --cluster FILE" if not args.cluster
                         else "--cluster FILE is for --backend external")
    with graceful_signals():
        if args.foreground:  # Ctrl-C must stop it even if we were started with SIGINT ignored
            signal.signal(signal.SIGINT, signal.default_int_handler)
        started = False
        try:
            # on failure Cluster.up has already stopped everything it started; its directory (and
            # the log the error message points at) stays until `cachecert down` or the next `up`
            cluster.up()
            started = True
            if args.backend == "external":  # proxies only: no run works in this process, so no namespace is kept
                from harness.services.external import teardown

                teardown(cluster)
            info = cluster.describe() | {"startup_s": {k: round(v, 3) for k, v in cluster.timings.items()}}
            if args.json:
                print(json.dumps(info, indent=2))
            else:
                print(f"cluster {cluster.id} up in {cluster.timings['total']:.1f} s (state: {cluster.dir})")
                print(f"  toxiproxy API  http://{info['toxiproxy']}")
                for s, ep in cluster.endpoints.items():
                    print(f"  {s:<9} proxy  {ep}   (direct {cluster.direct[s]})")
            sys.stdout.flush()  # a pipe would otherwise hold the endpoints back while we wait
            if args.foreground:
                import time

                print("Ctrl-C to stop", file=sys.stderr, flush=True)
                while True:
                    time.sleep(3600)
        finally:
            # foreground: the teardown covers every exit after up() began (a signal may land while
            # the endpoints print), and a second Ctrl-C / SIGTERM must not cut it short
            if args.foreground:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                cluster.down()  # a no-op if up was refused: that cluster is someone else's
                if started:
                    cluster.remove()
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from harness.cluster import list_clusters

    clusters = list_clusters()
    if args.json:
        print(json.dumps(clusters, indent=2))
        return 0
    if not clusters:
        print("no clusters")
        return 0
    for c in clusters:
        state = "running" if c["running"] else "stopped"
        if c["orphaned"]:
            state = "orphaned (its run is gone; `cachecert down` reaps it)"
        print(f"{c['id']}: {state}")
        for s, ep in c.get("endpoints", {}).items():
            print(f"  {s:<9} {ep}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from harness.cluster import down_all

    done = down_all(force=args.force, name=args.name)
    for cid, n in done:
        print(f"{cid}: reaped {n} process group(s)")
    if not done:
        print(f"no cluster {args.name!r} to reap" if args.name else "nothing to reap")
    return 0


# -- wiring --------------------------------------------------------------------------------
Handler = Callable[[argparse.Namespace], int]


CLUSTER_COMMANDS = ("up", "status", "down")


def build_parser(extensions: bool = True) -> tuple[argparse.ArgumentParser, dict[str, Handler]]:
    p = _Parser(prog="cachecert", description="Jepsen-style consistency harness for caching strategies")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    handlers: dict[str, Handler] = {}

    up = sub.add_parser("up", help="start an embedded cluster (Redis, PostgreSQL, Kafka, Toxiproxy)")
    up.add_argument("--services", help="default: redis,postgres,kafka (external: the cluster file's)")
    up.add_argument("--name", help="cluster name (default: 'default')")
    up.add_argument("--port-base", type=int, help="use fixed ports from here instead of free ones")
    up.add_argument("--backend", default="local", choices=("local", "docker", "external"))
    up.add_argument("--cluster", metavar="FILE", help="external backend: the cluster file (endpoints, fault commands)")
    up.add_argument("--topology", metavar="WORDS", help="e.g. redis=sentinel,postgres=replica,kafka=3")
    up.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops the cluster")
    up.add_argument("--json", action="store_true")
    handlers["up"] = cmd_up

    st = sub.add_parser("status", help="list clusters and their endpoints")
    st.add_argument("--json", action="store_true")
    handlers["status"] = cmd_status

    dn = sub.add_parser("down", help="stop detached clusters and reap what killed runs left behind")
    dn.add_argument("--force", action="store_true", help="also stop clusters of runs still alive")
    dn.add_argument("--name", help="only this cluster (default: every detached and orphaned one)")
    handlers["down"] = cmd_down

    if extensions:
        _register_extensions(sub, handlers)
    return p, handlers


def _register_extensions(sub: argparse._SubParsersAction, handlers: dict[str, Handler]) -> None:
    """The subcommands of the other modules (run engine, checkers, reports, search): plain imports,
    here rather than at the top so that up/status/down load none of them. A module that fails to
    import is an error of the harness, not a command that quietly goes missing."""
    from checkers import cli as checkers_cli
    from harness import report_cli, run_cli, search_cli, serve_node

    for module in (run_cli, checkers_cli, report_cli, search_cli, serve_node):
        module.register(sub, handlers)


def main(argv: list[str] | None = None) -> int:
    from harness.appnodes import AppError
    from harness.cluster import ClusterError
    from harness.services import ServiceError

    # up/status/down need none of the other subcommands' modules (checkers, workloads, numpy,
    # networkx: seconds of imports on a loaded machine): `cachecert down` in a CI cleanup step and
    # the tests' many CLI calls stay fast
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    if words and words[0] == "serve-node":  # an app node starts in a fraction of a second: no other imports
        from harness import serve_node

        return serve_node.main(sys.argv[1:] if argv is None else argv)
    parser, handlers = build_parser(extensions=not words or words[0] not in CLUSTER_COMMANDS)
    args = parser.parse_args(argv)
    try:
        return handlers[args.cmd](args)
    except UsageError as e:
        print(f"cachecert: error: {e}", file=sys.stderr)
        return Exit.USAGE
    except AppError as e:
        print(f"cachecert: {e}", file=sys.stderr)
        return e.exit_code
    except (ServiceError, ClusterError, MissingBinary) as e:
        first, *rest = str(e).splitlines()
        print(f"cachecert: {first}", file=sys.stderr)
        if rest:
            print("\n".join(rest), file=sys.stderr)
        return Exit.HARNESS
    except KeyboardInterrupt as e:
        print(f"cachecert: interrupted ({e or 'Ctrl-C'}); faults healed, services stopped", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the harness itself failed: one line, exit 255
        if os.environ.get("CACHECERT_DEBUG"):
            raise
        print(f"cachecert: internal error: {type(e).__name__}: {e} (set CACHECERT_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return Exit.HARNESS


if __name__ == "__main__":
    from harness.cli import main as _main  # the importable module, so its exception classes match

    sys.exit(_main())
