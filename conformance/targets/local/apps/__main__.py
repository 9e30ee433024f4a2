"""Entry point: python -m conformance.targets.local.apps APP --listen IP:PORT --pod NAME --namespace NS ..."""

import argparse
import sys
from pathlib import Path

from conformance.targets.local.apps import APPS
from conformance.targets.local.apps.outbound import Outbound, split_address
from conformance.targets.local.apps.server import App, serve


def _address(value: str) -> tuple[str, int]:
    try:
        return split_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m conformance.targets.local.apps")
    parser.add_argument("app", choices=APPS)
    parser.add_argument("--listen", type=_address, required=True, metavar="IP:PORT")
    parser.add_argument("--pod", required=True, help="pod name (reviews reports it as podname)")
    parser.add_argument("--namespace", required=True, help="namespace short service names resolve in")
    parser.add_argument("--version", choices=("v1", "v2", "v3"), default="v1", help="reviews version")
    parser.add_argument("--proxy", type=_address, metavar="IP:PORT", help="the pod's sidecar, for outbound calls")
    parser.add_argument("--registry", type=Path, metavar="FILE", help="service registry JSON, when no --proxy")
    parser.add_argument("--arg", action="append", default=[], metavar="ARG",
                        help="one of the container's args, for an app that reads them (http-echo)")
    return parser.parse_args(argv)


def build_app(args: argparse.Namespace) -> App:
    # Import only the module the app needs: start-up time is what matters here.
    outbound = Outbound(args.namespace, args.proxy, args.registry)
    if args.app == "httpbin":
        from conformance.targets.local.apps.httpbin import httpbin_app

        return httpbin_app()
    if args.app == "http-echo":
        from conformance.targets.local.apps.http_echo import http_echo_app, parse_echo_args

        return http_echo_app(parse_echo_args(args.arg))
    if args.app == "client":
        from conformance.targets.local.apps.client import client_app

        return client_app(outbound)
    from conformance.targets.local.apps import bookinfo

    if args.app == "details":
        return bookinfo.details_app()
    if args.app == "ratings":
        return bookinfo.ratings_app()
    if args.app == "reviews":
        return bookinfo.reviews_app(args.pod, args.version, outbound)
    return bookinfo.productpage_app(outbound)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    serve(args.listen, build_app(args), args.pod, args.app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
