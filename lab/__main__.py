"""``python -m lab up|down|status|stop-part|start-part|build|blocks`` — run the embedded lab.

See lab/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from lab import control

DEFAULT_DIR = Path(".lab")


def summary(info: dict[str, Any], seconds: float | None = None) -> str:
    """Return a human description of a running lab."""
    vc = info["vcenter"]
    lines = []
    if seconds is not None:
        lines.append(f"lab ready in {seconds:.1f}s — {info['dir']}")
    lines += [
        f"vCenter   https://{vc['host']}:{vc['port']}/sdk  user {vc['user']}"
        f"  (datacenter {vc['datacenter']}, cluster {vc['cluster']})",
    ]
    for a in info["arrays"]:
        lines.append(f"array     {a['name']:<9} {a['vendor']:<13} {a['url']}  user {a['user']}")
    for h in info["hosts"]:
        lines.append(f"host      {h['name']}  vmk {h['vmk_ip']}  iqn {h['iqn']}")
    for ds in info["datastores"]:
        vms = ", ".join(ds["vms"])
        if len(ds["vms"]) > 6:  # the scale datastore
            vms = f"{ds['vms'][0]} … {ds['vms'][-1]} ({len(ds['vms'])}, powered off)"
        lines.append(
            f"datastore {ds['name']:<12} {ds['protocol']:<5} on {ds['array']}/{ds['volume']}"
            f"  VMs {vms}  snapshots {', '.join(ds['snapshots'])}"
        )
    cases = info.get("cases", {})
    if cases:
        lines.append("cases     " + ", ".join(f"{k} {v}" for k, v in cases.items()))
    lines.append(f"CA bundle {info['ca_bundle']}  (passwords and ports: {info['dir']}/lab.json)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the lab command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the lab in the background and write DIR/lab.json")
    p_up.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p_up.add_argument("--reset", action="store_true", help="discard the arrays' saved state first")
    p_up.add_argument(
        "--tools-delay", type=float, default=1.0, help="seconds until a guest reports VMware Tools"
    )
    p_up.add_argument(
        "--scale-vms",
        type=int,
        default=0,
        metavar="N",
        help="add datastore ds-scale-01 holding N powered-off VMs (default 0: none)",
    )
    p_up.add_argument("--json", action="store_true", help="print lab.json instead of a summary")
    p_down = sub.add_parser("down", help="stop every lab process")
    p_down.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p_status = sub.add_parser("status", help="describe the running lab")
    p_status.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    p_status.add_argument("--json", action="store_true")
    for command, what in (("stop-part", "stop"), ("start-part", "start again")):
        p_part = sub.add_parser(command, help=f"{what} one array emulator of the running lab")
        p_part.add_argument("name", help="the array's lab name, e.g. primera1")
        p_part.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    sub.add_parser("build", help="build the lab vCenter (Go) if its sources changed")
    p_blocks = sub.add_parser(
        "blocks", help="save the lab's vCenter (as 'default') and arrays as Prefect blocks"
    )
    p_blocks.add_argument("--dir", type=Path, default=DEFAULT_DIR)
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            start = time.monotonic()
            info = control.up(
                args.dir,
                reset=args.reset,
                tools_delay_s=args.tools_delay,
                scale_vms=args.scale_vms,
            )
            elapsed = time.monotonic() - start
            print(json.dumps(info, indent=2) if args.json else summary(info, elapsed))
        elif args.command == "down":
            stopped = control.down(args.dir)
            print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        elif args.command == "status":
            info = control.load(args.dir)
            running = control.running_pids(args.dir)
            missing = sorted(set(info["pids"]) - set(running))
            print(json.dumps(info, indent=2) if args.json else summary(info))
            if missing:
                print(f"NOT RUNNING: {', '.join(missing)} (see {info['logs']})")
                return 1
        elif args.command == "stop-part":
            control.stop_part(args.dir, args.name)
            print(f"stopped: {args.name}")
        elif args.command == "start-part":
            pid = control.start_part(args.dir, args.name)
            print(f"started: {args.name} (pid {pid})")
        elif args.command == "build":
            print(control.build_vcsim())
        elif args.command == "blocks":
            # the lab is offline: keep Prefect's ephemeral server from trying to send telemetry
            os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
            from lab.blockstore import save_blocks

            for name in save_blocks(control.load(args.dir)):
                print(f"saved block {name}")
    except control.LabError as err:
        print(f"lab: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
