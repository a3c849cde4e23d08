"""Run one array emulator: ``python -m lab.arrays CONFIG.json`` (started by ``lab up``)."""

from __future__ import annotations

import sys
from pathlib import Path

import uvicorn

from lab.arrays import emulator_for
from lab.arrays.base import ArrayConfig


def main(argv: list[str]) -> int:
    """Serve the emulator described by the config file in ``argv[0]`` until terminated."""
    if len(argv) != 1:
        print("usage: python -m lab.arrays CONFIG.json", file=sys.stderr)
        return 2
    config = ArrayConfig.model_validate_json(Path(argv[0]).read_text())
    emulator = emulator_for(config)
    uvicorn.run(
        emulator.app(),
        host=config.host,
        port=config.port,
        ssl_certfile=config.cert,
        ssl_keyfile=config.key,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
