"""Throughput against the number of devices: the same run laid out over 1, 2, 4, 8 devices.

Each device count runs in its own process (XLA fixes the count at start-up). On a CPU machine
the devices are forced (``--xla_force_host_platform_device_count``) and share the same cores,
so this measures the overhead of sharding rather than a speed-up; on a multi-GPU machine the
same command measures real scaling. The same total work (lanes x batch x generations) runs on
every device count; the ``per_device_efficiency`` column divides the speed-up by the ideal one.

With ``--shard batch`` a row also gives ``forward_ceiling``: the classifier's own rate on one
device at one device's share of the batch over its rate at the whole batch. A forward pass over
25 images runs slower per image than over 200, so this bounds what splitting a batch can keep
whatever the collectives cost; ``of_ceiling`` is the efficiency over that bound.

    python benchmarks/scaling.py --devices 1,2,4,8 --seeds 8
    python benchmarks/scaling.py --devices 1,8 --seeds 2 --shard batch --batch 1600
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

WORKER = r"""
import json, sys, time, jax, jax.numpy as jnp, numpy as np
from jaxfool.distributed import make_plan
from jaxfool.evolution import Lanes, prepare
from jaxfool.experiment import build_experiment
from jaxfool.presets import load_preset
preset, seeds, batch, shard, length, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
exp = build_experiment(load_preset(preset, seeds=seeds, batch=batch, chunk=length, stop_when_fooled=False, generations=2**31 - 1))
lanes = Lanes.of([exp])
plan = make_plan(shard, len(lanes), exp.engine.batch_size)
state, params, keys, chunk_fn = prepare(lanes, plan)  # exactly what a run executes
chunk = lambda: jax.block_until_ready(chunk_fn(params, state, keys)[0].archive.fitness)
chunk()
best = min((lambda t: (chunk(), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(repeats))
devices = jax.devices()
row = {"devices": len(devices), "layout": plan.mode if plan else "single", "lanes": len(lanes),
       "batch": exp.engine.batch_size, "evals_per_s": round(len(lanes) * exp.engine.batch_size * length / best),
       "ideal_speedup": len(devices) if devices[0].platform != "cpu" else 1}
if plan is not None and plan.mode == "batch":
    # The classifier's own rate on one device at each device's share of the batch, over its rate
    # at the whole batch: a forward pass on fewer images is less efficient, so this bounds what
    # splitting the batch can keep, whatever the collectives cost.
    clf = exp.classifier
    def forward_rate(b):
        x = jnp.asarray(np.random.default_rng(0).random((b, *clf.input_shape)), jnp.float32)
        body = lambda c, _: (c + clf.log_probs(clf.params, x + c * 1e-30).sum(), None)
        f = jax.jit(lambda: jax.lax.scan(body, jnp.float32(0), None, length=length)[0])
        f().block_until_ready()
        return b / min((lambda t: (f().block_until_ready(), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(repeats))
    share = -(-exp.engine.batch_size // len(devices))
    row["forward_ceiling"] = round(forward_rate(share) / forward_rate(exp.engine.batch_size), 3)
print(json.dumps(row))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", default="1,2,4,8")
    parser.add_argument("--preset", default="mnist-direct-fast")
    parser.add_argument("--seeds", type=int, default=8, help="lanes (vmapped seeds; a multiple of every device count to split lanes)")
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--shard", default="auto", help="auto | lanes | batch")
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
        # Per-device efficiency: the speed-up over the ideal one. Forced CPU devices share the
        # same cores, so there the ideal is 1 (the same total rate, the work split, not repeated).
        rows[-1]["per_device_efficiency"] = round(rows[-1]["relative_to_first"] / rows[-1]["ideal_speedup"], 3)
        if "forward_ceiling" in rows[-1]:
            rows[-1]["of_ceiling"] = round(rows[-1]["per_device_efficiency"] / rows[-1]["forward_ceiling"], 3)
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
