"""A command run under torchrun with something planted, for tests/test_parallel.py (not a test module):

    torchrun --standalone --nproc_per_node 2 tests/parallel_worker.py PLANT COMMAND -- ARGS...

PLANT is one of
    none             the command as it is
    raise-in-share   rank 1 raises ValueError inside its share of the first head sweep
    die              rank 1 exits (status 3) at its first gather, without a word to the others
    ctrl-c-stage-3   every rank gets Ctrl-C as the third ablation stage starts (a cut run to resume)
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    plant, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    args = args[1:] if args[:1] == ["--"] else args
    rank = int(os.environ.get("RANK", "0"))
    from vlmheads import parallel

    real_map = parallel.map_batches
    if plant == "raise-in-share":
        def planted(fn, items, step="batches"):
            def failing(item):
                if rank == 1 and step == "head sweep":
                    raise ValueError("planted failure on rank 1")
                return fn(item)
            return real_map(failing, items, step)
        parallel.map_batches = planted
    elif plant == "die":
        def planted(fn, items, step="batches"):
            if rank == 1:
                os._exit(3)
            return real_map(fn, items, step)
        parallel.map_batches = planted
    elif plant == "ctrl-c-stage-3":
        from dataclasses import replace

        from vlmheads import locate

        real, calls = locate.LOCATE_METHODS["ablation"].run, []

        def then_ctrl_c(state, function):
            calls.append(function)
            if len(calls) == 3:
                raise KeyboardInterrupt
            real(state, function)

        locate.LOCATE_METHODS._items["ablation"] = replace(locate.LOCATE_METHODS["ablation"], run=then_ctrl_c)
    elif plant != "none":
        raise SystemExit(f"unknown plant {plant!r}")
    module = __import__(f"heads.{command}", fromlist=["main"])
    return module.main(args)


if __name__ == "__main__":
    sys.exit(main())
