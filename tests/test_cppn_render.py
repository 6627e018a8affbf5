"""The two CPPN renderers: same pictures, the backend's choice, the accelerator path's shape."""

from __future__ import annotations

import dataclasses
import re

import jax
import numpy as np
import pytest

from conftest import run_script
from jaxfool.config import ACTIVATIONS
from jaxfool.encodings import activations
from jaxfool.encodings.cppn import CPPNEncoding, CPPNParams


def _grown(enc: CPPNEncoding, n: int, rounds: int, seed: int = 0):
    """``n`` genomes after ``rounds`` of mutation with a high node-adding rate: many hidden nodes."""
    genomes = enc.init(jax.random.key(seed), n)
    params = CPPNParams(add_node_rate=0.8, add_conn_rate=0.8, activation_rate=0.3)
    mutate = jax.jit(lambda k, g: enc.mutate(k, g, 1, params))
    for r in range(rounds):
        genomes = mutate(jax.random.key(1000 * seed + r), genomes)
    return genomes


@pytest.mark.parametrize("shape,names", [((28, 28, 1), ACTIVATIONS[:4]), ((20, 24, 3), ACTIVATIONS)])
def test_grouped_and_unrolled_paint_the_same_pictures(shape, names):
    enc = CPPNEncoding(shape, max_hidden=8, max_conns=32, activations=names)
    genomes = _grown(enc, 48, 25)
    hidden = np.asarray(genomes.node_on[:, 4 + enc.num_outputs :]).sum(1)
    assert hidden.max() >= 5 and hidden.min() < hidden.max()  # deep nets, and groups of mixed sizes
    grouped, unrolled = (dataclasses.replace(enc, renderer=r) for r in ("grouped", "unrolled"))
    coords = enc.coordinates()
    # Weights up to 10 through several sines amplify rounding: agree to 2e-4, not bit for bit.
    np.testing.assert_allclose(grouped.outputs(genomes, coords), unrolled.outputs(genomes, coords), atol=2e-4)
    a, b = np.asarray(grouped.render(genomes)), np.asarray(unrolled.render(genomes))
    # They sum in different orders: a value on a rounding boundary may land one level apart.
    assert np.abs(a - b).max() <= 1 / 255 + 1e-6 and (a != b).mean() < 1e-3


def test_auto_renders_grouped_on_cpu_and_unrolled_on_accelerators(monkeypatch):
    enc = CPPNEncoding((28, 28, 1))
    assert enc.render_path() == "grouped"  # this machine
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert enc.render_path() == "unrolled"
        assert "while" not in _hlo(enc, 64)  # and that is what render compiles
    assert dataclasses.replace(enc, renderer="grouped").render_path() == "grouped"


def _hlo(enc: CPPNEncoding, batch: int) -> str:
    genomes = jax.eval_shape(lambda: enc.init(jax.random.key(0), batch))
    return jax.jit(enc.render).lower(genomes).compile().as_text()


def _trip_counts(hlo: str) -> list[int]:
    return [int(n) for n in re.findall(r'"known_trip_count":\{"n":"(\d+)"', hlo)]


def test_unrolled_path_has_no_loop_growing_with_the_batch():
    enc = CPPNEncoding((28, 28, 1), renderer="unrolled")
    for batch in (64, 4096):  # both fit the default 1 GiB budget: straight-line code, no loop
        hlo = _hlo(enc, batch)
        assert "while" not in hlo, f"a loop at batch {batch}"
    # With a budget of 16 genomes a pass, the batch is rendered in the fewest chunks that fit.
    per_genome = 4 * 28 * 28 * (4 + 12 + 1 + 4)
    small = dataclasses.replace(enc, render_memory=16 * per_genome)
    assert _trip_counts(_hlo(small, 64)) == [4]
    genomes = _grown(enc, 64, 10)
    np.testing.assert_array_equal(small.render(genomes), enc.render(genomes))  # elementwise: same bits


def test_sine_and_cosine_are_accurate_over_the_range_cppns_reach():
    x = np.linspace(-1e4, 1e4, 400_001, dtype=np.float32)
    exact = x.astype(np.float64)
    assert np.abs(np.asarray(jax.jit(activations.sine)(x)) - np.sin(exact)).max() < 2e-7
    assert np.abs(np.asarray(jax.jit(activations.cosine)(x)) - np.cos(exact)).max() < 2e-7
    picked = activations.apply(("sine", "gaussian"), np.array([0, 1, 0]), np.array([1.0, 1.0, -2.0], np.float32))
    np.testing.assert_allclose(picked, [np.sin(1.0), np.exp(-1.0), np.sin(-2.0)], atol=2e-7)


@pytest.mark.parametrize(
    "args,message",
    [
        (["--renderer", "fastest"], "unknown renderer 'fastest'; choose one of auto, grouped, unrolled"),
        (["--renderer", "unrolled", "--render-memory", "1", "--max-hidden", "400", "--max-conns", "500"],
         "too small for one 784-pixel genome"),
        (["--render-memory", "0"], "render_memory must be >= 1"),
    ],
)
def test_renderer_flags_fail_in_one_line(tmp_path, args, message):
    proc = run_script("run.py", "--preset", "mnist-cppn", "--generations", "1", "--quiet", "--out", str(tmp_path / "r"), *args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
