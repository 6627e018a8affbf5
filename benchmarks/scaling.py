"""Throughput against the number of devices: the same run laid out over 1, 2, 4, 8 devices.

Each device count runs in its own process (XLA fixes the count at start-up). On a CPU machine
the devices are forced (``--xla_force_host_platform_device_count``) and share the same cores,
so this measures the overhead of sharding rather than a speed-up; on a multi-GPU machine the
same command measures real scaling.

    python benchmarks/scaling.py --devices 1,2,4,8 --seeds 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time, jax, numpy as np
from jaxfool.distributed import make_plan
from jaxfool.experiment import build_experiment
from jaxfool.map_elites import init_seeds, run_generations, seed_keys
from jaxfool.presets import load_preset
import dataclasses
preset, seeds, batch, shard, length, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
exp = build_experiment(load_preset(preset, seeds=seeds, batch=batch))
plan = make_plan(shard, seeds, exp.engine.batch_size)
engine = exp.engine if plan is None or plan.batch_sharding is None else dataclasses.replace(exp.engine, batch_sharding=plan.batch_sharding)
keys = seed_keys(exp.seeds)
state = init_seeds(engine, exp.params, keys)
params = exp.params
if plan is not None:
    state, keys, params = plan.place(state), plan.place(keys), plan.place(params, plan.replicated)
stop, cap = np.float32(np.inf), np.int32(2**31 - 1)
chunk = lambda: jax.block_until_ready(run_generations(engine, params, state, keys, length, stop, cap)[0].archive.fitness)
chunk()
best = min((lambda t: (chunk(), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(repeats))
print(json.dumps({"devices": jax.device_count(), "layout": plan.mode if plan else "single", "seeds": seeds,
                  "batch": exp.engine.batch_size, "evals_per_s": round(seeds * exp.engine.batch_size * length / best)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--preset", default="mnist-direct-fast")
    parser.add_argument("--seeds", type=int, default=8, help="vmapped seeds (a multiple of every device count to split seeds)")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--shard", default="auto", help="auto | seeds | batch")
    parser.add_argument("--generations", type=int, default=10, help="generations per timed chunk")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for n in (int(d) for d in args.devices.split(",")):
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"} if n > 1 or "XLA_FLAGS" in os.environ else dict(os.environ)
        out = subprocess.run(
            [sys.executable, "-c", WORKER, args.preset, str(args.seeds), str(args.batch), args.shard, str(args.generations), str(args.repeats)],
            env=env, capture_output=True, text=True, check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows[-1]["relative_to_first"] = round(rows[-1]["evals_per_s"] / rows[0]["evals_per_s"], 3)
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
