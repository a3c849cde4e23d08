"""``python -m deployments serve|deploy|limits|demo`` — run snaprestore's deployments.

serve            register the block types and concurrency limits, then serve every
                 deployment from this process until stopped (Ctrl-C);
deploy --pool P  the same deployments on a work pool, for `prefect worker start --pool P`;
limits           only create the per-array and per-host concurrency limits;
demo             the end-to-end demo on the embedded lab (see README).

All use the Prefect API in ``PREFECT_API_URL``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m deployments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve every deployment from this process")
    p_serve.add_argument("--limit", type=int, default=None, help="flow runs at once")
    p_deploy = sub.add_parser("deploy", help="create the deployments on a work pool")
    p_deploy.add_argument("--pool", required=True, help="work pool (created if missing)")
    sub.add_parser("limits", help="create the concurrency limits")
    p_demo = sub.add_parser("demo", help="run the demo on the embedded lab")
    p_demo.add_argument("--dir", type=Path, default=Path(".lab"))
    p_demo.add_argument(
        "--stop-at-end", action="store_true", help="non-interactive: stop everything at the end"
    )
    p_demo.add_argument("--down", action="store_true", help="stop a running demo")
    args = parser.parse_args(argv)

    if args.command == "demo":
        from deployments.demo import demo, demo_down

        return demo_down(args.dir) if args.down else demo(args.dir, args.stop_at_end)

    from blocks.registry import register_block_types
    from deployments.limits import ensure_concurrency_limits

    register_block_types()
    limits = ensure_concurrency_limits()
    print("concurrency limits: " + ", ".join(f"{t}={n}" for t, n in limits.items()))
    if args.command == "limits":
        return 0
    if args.command == "deploy":
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.actions import WorkPoolCreate
        from prefect.exceptions import ObjectAlreadyExists

        from deployments.definitions import deploy_to_pool

        with get_client(sync_client=True) as client, contextlib.suppress(ObjectAlreadyExists):
            client.create_work_pool(WorkPoolCreate(name=args.pool, type="process"))
        for dep_id in deploy_to_pool(args.pool):
            print(f"deployed {dep_id} on work pool {args.pool}")
        return 0

    from prefect import serve

    from deployments.definitions import runner_deployments

    serve(*runner_deployments(), limit=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
