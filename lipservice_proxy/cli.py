"""`lipservice-proxy` and its subcommands.

Exit codes: 0 success, 1 a failure while running, 2 invalid usage, config or policy (with one clear
message on stderr and no traceback), 3 `run` stopped but had to drop records it had acknowledged
(memory queues still held them at the shutdown deadline; a log line says how many).
"""

from __future__ import annotations

import os

# gRPC's C core logs through absl straight to stderr, past Python's logging and its JSON lines: at its
# default level, INFO, a TLS handshake failure or a fork while channels exist prints a plain line
# (`I1205 ... ssl_transport_security.cc ...`) on every reconnect, for as long as the channel retries.
# It reads GRPC_VERBOSITY once, when grpc is first imported (here, and in every child process, which
# inherits the environment): ERROR keeps its rare real errors (a port already bound says why only
# there) and silences the rest. An operator's own GRPC_VERBOSITY (and GRPC_TRACE) still wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import ConfigError, InputError, LipserviceError, PolicyError
from .patterns.command import add_arguments as add_pattern_arguments
from .proposals_cli import add_arguments as add_proposal_arguments
from .sampling.severity import SEVERITY_NAMES

if TYPE_CHECKING:
    from .config import ProxyConfig
    from .sampling.policy import Policy
    from .service import Service

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_RECORDS_LOST = 0, 1, 2, 3


def _run(args: argparse.Namespace) -> int:
    import logging

    from .config import load_config, unknown_env_variables
    from .logsetup import configure_logging

    config = load_config(args.config)  # before the heavier imports, so a bad file fails fast
    configure_logging(config.logging.level, config.logging.format)
    for warning in unknown_env_variables(config) if args.worker_index is None else ():  # said by the parent
        logging.getLogger("lipservice_proxy.config").warning(warning)
    if args.workers is not None:
        if args.role != "standalone":
            raise ConfigError(
                "--workers runs one host's standalone proxy as N sampler processes and their analyzer; "
                "it cannot be combined with --role sampler or --role analyzer"
            )
        from .metricsdir import enable_multiprocess_metrics

        enable_multiprocess_metrics()  # before anything imports prometheus_client
    elif args.worker_index is not None:
        from .fleet.workers import die_with_parent

        die_with_parent()
    from .service import run_until_signalled

    async def serve() -> int:
        # Built inside the running loop: grpc.aio servers and channels bind to the loop they are made in.
        return await run_until_signalled(_service(config, args), worker=args.worker_index)

    dropped = _event_loop_runner()(serve())
    return EXIT_RECORDS_LOST if dropped else EXIT_OK


def _service(config: ProxyConfig, args: argparse.Namespace) -> Service:
    if args.workers is not None:
        from .fleet.workers import Supervisor

        return Supervisor(config, args.workers, config_path=args.config)
    if args.role == "analyzer":
        from .fleet.analyzer import Analyzer

        return Analyzer(config)
    from .service import Proxy

    if args.worker_index is not None:  # started by a Supervisor: a sampler sharing its ports
        return Proxy(config, role="sampler", reuse_port=True)
    return Proxy(config, role=args.role)


def _event_loop_runner() -> Callable[..., object]:
    try:
        import uvloop
    except ImportError:  # uvloop is optional (no Windows build); asyncio's loop works, slower
        return asyncio.run
    return uvloop.run


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .logsetup import configure_logging

    configure_logging("warning", "text")  # the summary is the output; only problems go to stderr
    _event_loop_runner()(
        run_demo(records=args.records, seed=args.seed, top=args.top, policy=args.policy, serve=args.serve)
    )
    return EXIT_OK


def _policy_validate(args: argparse.Namespace) -> int:
    from .sampling.policy import load_policy

    policy = load_policy(args.file)
    print(
        f"{args.file}: valid (version {policy.version}, {len(policy.patterns)} pattern rules, "
        f"{len(policy.exemptions)} exemptions)"
    )
    return EXIT_OK


def _config_validate(args: argparse.Namespace) -> int:
    """What `run` checks before it starts anything: the file with the environment's overrides, then the
    policy files it would load (a broken one stops `run` too). Certificates, secrets and ports belong
    to the machine the proxy runs on and are checked there, at start."""
    from .config import load_config, unknown_env_variables
    from .sampling.policy import Policy
    from .sampling.store import PolicyStore, missing_policy_file

    config = load_config(args.file)
    store = PolicyStore([config.sampler.policy_file, config.analysis.policy_file], Policy())
    policy = store.load_initial()
    missing = missing_policy_file(config.sampler.policy_file, store.source_name)
    for warning in [*unknown_env_variables(config), *([missing] if missing else [])]:
        print(f"lipservice-proxy: warning: {warning}", file=sys.stderr)
    exporters = len(config.exporters)
    print(
        f"{args.file}: valid ({exporters} exporter{'s' if exporters != 1 else ''}; "
        f"policy version {policy.version} from {store.source_name})"
    )
    return EXIT_OK


def _config_print(args: argparse.Namespace) -> int:
    import yaml

    from .config import load_config, redacted, unknown_env_variables

    config = load_config(args.file)
    for warning in unknown_env_variables(config):
        print(f"lipservice-proxy: warning: {warning}", file=sys.stderr)
    layers = ["defaults", *([str(args.file)] if args.file else []), "LIPSERVICE_* overrides"]
    print(f"# the effective config: {' + '.join(layers)}; secrets redacted")
    print(yaml.safe_dump(redacted(config.model_dump(mode="json")), sort_keys=False, width=110), end="")
    return EXIT_OK


def _policy_schema(args: argparse.Namespace) -> int:
    import json

    from .sampling.policy import policy_json_schema

    print(json.dumps(policy_json_schema(), indent=2))
    return EXIT_OK


def _load_policy_arg(path: Path | None) -> tuple[Policy, str]:
    """--policy, else policies/default.yaml when present, else the built-in default (as `run` does)."""
    from .config import SamplerConfig
    from .sampling.policy import Policy, load_policy

    candidate = path or SamplerConfig().policy_file
    if path is not None or candidate.exists():
        return load_policy(candidate), str(candidate)
    return Policy(), "the built-in default policy"


def _read_lines(name: str) -> list[str]:
    if name == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            raise InputError(f"{name}: cannot read: {exc.strerror}") from None
    return data.decode("utf-8", errors="replace").splitlines()


def _replay(args: argparse.Namespace) -> int:
    import json

    from .replay import format_table, read_records, replay

    policy, source = _load_policy_arg(args.policy)
    records = read_records(_read_lines(args.file))
    if not records:
        raise InputError(f"{args.file}: no log records in the input")
    report = replay(
        records, policy, total=args.records, rate=args.rate, always_keep_min_severity=args.always_keep
    ).as_dict(args.top)
    if args.format == "json":
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report, source))
    return EXIT_OK


def _analyze(args: argparse.Namespace) -> int:
    from .analysis.offline import analyze_records
    from .config import AnalysisConfig, load_config
    from .replay import read_records
    from .sampling.policy import dump_policy, load_policy

    config = load_config(args.config).analysis if args.config else AnalysisConfig()
    if args.policy is None and args.output is not None and args.output.exists():
        base, source = load_policy(args.output), str(args.output)
    else:
        base, source = _load_policy_arg(args.policy)
    records = read_records(_read_lines(args.file))
    if not records:
        raise InputError(f"{args.file}: no log records in the input")
    result = asyncio.run(
        analyze_records(
            records,
            base,
            config,
            output=args.output,
            total=args.records,
            rate=args.rate,
            always_keep_min_severity=args.always_keep,
        )
    )
    if result.policy is None:
        raise InputError(f"{args.file}: {result.message or 'no policy could be proposed'}")
    if args.output is None:
        print(dump_policy(result.policy), end="")
    fallback = " (the LLM gave no usable answer)" if result.outcome == "fallback" else ""
    summary = (
        f"analyze: {result.records} records, {len(result.policy.patterns)} pattern rules, "
        f"{result.families} families ({result.noise} singletons), by {result.policy.generated_by}"
        f"{fallback}, refining {source}"
    )
    if args.output is not None:
        state = "wrote" if result.written else "unchanged, not written:"
        summary += f"; {state} version {result.policy.version} to {args.output}"
    guardrails = [
        line for line in (result.policy.reasoning or "").splitlines() if line.startswith("Guardrails:")
    ]
    print("\n".join([summary, *guardrails[-1:]]), file=sys.stderr)
    return EXIT_OK if result.outcome != "error" else EXIT_FAILURE


def _patterns(args: argparse.Namespace) -> int:
    from .patterns.command import execute

    return execute(args)


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lipservice-proxy", description="An OTLP sidecar that samples logs in flight by pattern."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the proxy")
    run.add_argument("-c", "--config", type=Path, help="config file (YAML); defaults apply without one")
    run.add_argument(
        "--role",
        choices=("standalone", "sampler", "analyzer"),
        default="standalone",
        help="standalone (default): one proxy with its own analysis; sampler: sample, report to "
        "fleet.analyzer and take its policy; analyzer: the fleet's analysis and policy, no receivers",
    )
    run.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="run N sampler processes sharing the receiver ports, with one admin endpoint (standalone only)",
    )
    run.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)  # set by --workers for its children
    run.set_defaults(handler=_run)

    demo = commands.add_parser(
        "demo",
        help="a proxy in-process, sample logs through the OpenTelemetry SDK, what was kept and dropped",
    )
    demo.add_argument(
        "--records", type=_positive_int, default=20_000, help="records to replay (default 20000)"
    )
    demo.add_argument("--policy", type=Path, help="policy file (default: policies/default.yaml or built-in)")
    demo.add_argument("--seed", type=int, default=1, help="seed of the generated workload (default 1)")
    demo.add_argument("--top", type=_positive_int, default=10, help="patterns to list (default 10)")
    demo.add_argument(
        "--serve", action="store_true", help="keep the proxy running afterwards, for its status page"
    )
    demo.set_defaults(handler=_demo)

    patterns = commands.add_parser("patterns", help="one log line in, one pattern_id<TAB>template out")
    add_pattern_arguments(patterns)
    patterns.set_defaults(handler=_patterns)

    replay = commands.add_parser("replay", help="what-if: how much a policy would keep and drop")
    replay.add_argument("file", metavar="FILE|-", help="log lines: plain text, JSON lines or OTLP/JSON")
    replay.add_argument(
        "--policy", type=Path, help="policy file (default: policies/default.yaml or built-in)"
    )
    replay.add_argument("--records", type=_positive_int, help="cycle the input to this many records")
    replay.add_argument("--rate", type=_positive_float, help="records per second of log time (default 1000)")
    replay.add_argument("--format", choices=("table", "json"), default="table")
    replay.add_argument("--top", type=_positive_int, default=20, help="patterns to list (default 20)")
    replay.add_argument(
        "--always-keep", default="ERROR", choices=SEVERITY_NAMES, help="always_keep_min_severity"
    )
    replay.set_defaults(handler=_replay)

    analyze = commands.add_parser("analyze", help="one analysis pass over a log file; writes a policy")
    analyze.add_argument("file", metavar="FILE|-", help="log lines: plain text, JSON lines or OTLP/JSON")
    analyze.add_argument(
        "-o", "--output", type=Path, help="policy file to write (atomically); default: print to stdout"
    )
    analyze.add_argument("-c", "--config", type=Path, help="config file whose `analysis` section applies")
    analyze.add_argument(
        "--policy", type=Path, help="policy to refine (default: -o FILE if it exists, else as replay)"
    )
    analyze.add_argument("--records", type=_positive_int, help="cycle the input to this many records")
    analyze.add_argument("--rate", type=_positive_float, help="records per second of log time (default 1000)")
    analyze.add_argument(
        "--always-keep", default="ERROR", choices=SEVERITY_NAMES, help="always_keep_min_severity"
    )
    analyze.set_defaults(handler=_analyze)

    proposals = commands.add_parser(
        "proposals", help="list, show, apply or reject the analysis loop's proposals on a running proxy"
    )
    add_proposal_arguments(proposals)

    config_command = commands.add_parser("config", help="config file tools")
    config_commands = config_command.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_validate = config_commands.add_parser(
        "validate", help="check a config file (with LIPSERVICE_* overrides) as `run` does; exit 0 or 2"
    )
    config_validate.add_argument("file", type=Path)
    config_validate.set_defaults(handler=_config_validate)
    config_print = config_commands.add_parser(
        "print",
        help="print the effective config: defaults, the file, LIPSERVICE_* overrides; secrets redacted",
    )
    config_print.add_argument(
        "file", type=Path, nargs="?", help="config file (YAML); the defaults without one"
    )
    config_print.set_defaults(handler=_config_print)

    policy = commands.add_parser("policy", help="policy file tools")
    policy_commands = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    validate = policy_commands.add_parser("validate", help="check a policy file")
    validate.add_argument("file", type=Path)
    validate.set_defaults(handler=_policy_validate)
    schema = policy_commands.add_parser("schema", help="print the policy JSON Schema")
    schema.set_defaults(handler=_policy_schema)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, PolicyError, InputError) as exc:
        print(f"lipservice-proxy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LipserviceError as exc:
        print(f"lipservice-proxy: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
