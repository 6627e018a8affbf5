"""PyTorch classifiers as jaxfool classifiers (the ``torch`` extra: ``pip install -e '.[torch]'``).

torchax lowers a module's ATen operations to JAX *when the function is traced*, so torch runs
once per compilation and never inside the generation loop; the module's weights and buffers
become the classifier's params pytree (placed on the devices once, never constants of the
program). The result is an ordinary :class:`~jaxfool.models.Classifier`: jit, vmap over lanes,
sharding, ``jax.grad`` and ``--compute-dtype bfloat16`` all apply as to our Flax networks.

Two sources:
  * a ``torch.nn.Module`` (put in eval mode: dropout off, batch norm on running statistics),
    exported here with a dynamic batch (or a batch of one, run under ``vmap``, where its code
    fixes the batch); one that does not export runs through torchax's tensor environment;
  * a ``torch.export`` program (``torch.export.save`` → ``.pt2``: graph and weights in one
    file, no user code to import); its image shape and class count are read from the program.

An exported graph runs through our interpreter of torchax's lowerings
(:mod:`jaxfool.models.torch_lowerings`): channels-last, with its weights prepared once at load
(kernels in the layout they run, batch norms folded into the convolutions before them).

Input conventions are declared, never guessed (:class:`TorchInput`): images reach the module
NCHW, in ``value_range`` (default [0, 1]), then ``(x - mean) / std`` per channel. What the module
returns is declared too (``outputs``: ``logits``, ``log_probs`` — a module ending in
``LogSoftmax`` — or ``probs``), or recognised from a probe (``auto``: rows whose exponentials sum
to 1 are log-probabilities, rows of non-negative numbers summing to 1 are probabilities).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxfool.config import TORCH_CONVENTIONS, TORCH_OUTPUTS, default
from jaxfool.errors import ClassifierError
from jaxfool.models.classifier import Classifier

# The pair the extra pins: torchax 0.0.13 fails at import with torch 2.13 and 2.14
# (``aten.prod.dim_Dimname`` no longer exists).
PINNED = "torch 2.12.1 with torchax 0.0.13"
INSTALL = "pip install -e '.[torch]'"
PREFIX = "torch:"


@dataclasses.dataclass(frozen=True)
class TorchInput:
    """What a PyTorch module expects and returns.

    Attributes:
      mean, std: per-channel normalisation ``(x - mean) / std`` after scaling to
        ``value_range`` (one value, or one per channel; empty: none).
      value_range: ``(low, high)``: the pixel range before normalisation (0-1 or 0-255).
      outputs: ``logits`` | ``log_probs`` | ``probs`` | ``auto`` (recognised from a probe).
    """

    mean: tuple[float, ...] = default("input_mean")
    std: tuple[float, ...] = default("input_std")
    value_range: tuple[float, float] = default("input_range")
    outputs: str = default("outputs")

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> TorchInput:
        """From :class:`~jaxfool.config.RunConfig` fields (``input_mean``, ``input_std``,
        ``input_range``, ``outputs``; those missing keep their defaults)."""
        values = {k: fields.get(k, default(k)) for k in TORCH_CONVENTIONS}
        return cls(mean=tuple(values["input_mean"]), std=tuple(values["input_std"]), value_range=tuple(values["input_range"]),
                   outputs=values["outputs"])

    def check(self, channels: int) -> None:
        """One-line :class:`ClassifierError` for conventions that cannot apply to ``channels``."""
        if self.outputs not in TORCH_OUTPUTS:
            raise ClassifierError(f"unknown outputs {self.outputs!r}; choose one of {', '.join(TORCH_OUTPUTS)}")
        if len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]:
            raise ClassifierError(f"input_range must be two numbers low,high with low < high, got {self.value_range}")
        if bool(self.mean) != bool(self.std):
            raise ClassifierError("input_mean and input_std go together: give both or neither")
        for name, values in (("input_mean", self.mean), ("input_std", self.std)):
            if values and len(values) not in (1, channels):
                raise ClassifierError(f"{name} needs 1 or {channels} values (one per channel), got {len(values)}")
        if any(not s > 0 for s in self.std):
            raise ClassifierError(f"input_std must be > 0, got {self.std}")


def require_torch():
    """Imports ``(torch, torchax)`` or raises the one-line error saying how to install them."""
    try:
        import torch
        import torchax
        import torchax.export  # noqa: F401 - the exported-program path
    except ImportError as e:
        raise ClassifierError(f"PyTorch classifiers need the torch extra ({e.name or e} is missing): {INSTALL}") from None
    except Exception as e:  # noqa: BLE001 - torchax of another torch fails at import with various errors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ClassifierError(f"torchax does not import beside this torch ({first}); the torch extra pins {PINNED}: {INSTALL}") from None
    return torch, torchax


def is_torch_model(obj: Any) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` or ``torch.export.ExportedProgram`` (without
    importing torch where the caller never did)."""
    return any(c.__module__.split(".")[0] == "torch" and c.__name__ in ("Module", "ExportedProgram") for c in type(obj).__mro__)


def from_torch(
    model: Any,
    *,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    conventions: TorchInput = TorchInput(),
    name: str | None = None,
) -> Classifier:
    """A PyTorch module or ``torch.export`` program as a :class:`Classifier`.

    Args:
      model: a ``torch.nn.Module`` (switched to eval mode) or a ``torch.export.ExportedProgram``.
      input_shape: ``(channels, height, width)`` of one image, PyTorch's order (a program's own
        when ``None``; required for a module).
      num_classes: checked against the output when given (read from it otherwise).
      class_names: one per output (default ``"0"``, ``"1"``, ...).
      conventions: how images are scaled and normalised, and what the module returns.
      name: shown in pictures and errors (default: the module's class name).

    Returns:
      a classifier whose ``apply_fn(params, images [N, H, W, C])`` transposes to NCHW,
      normalises and runs the lowered module; ``params`` are the module's weights and buffers.

    Example::

        import torch, jaxfool
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        clf = jaxfool.models.from_torch(net, input_shape=(1, 28, 28))
        clf.logits(jax.numpy.zeros((2, 28, 28, 1))).shape    # (2, 10)
    """
    torch, torchax = require_torch()
    label = name or type(model).__name__
    program = None
    if isinstance(model, torch.export.ExportedProgram):
        params, call, program_shape, where = _lower_program(model, label)
        input_shape = tuple(input_shape or program_shape)
        if tuple(input_shape) != tuple(program_shape):
            raise ClassifierError(f"{label}: input_shape {tuple(input_shape)} differs from the program's own {tuple(program_shape)}")
    elif isinstance(model, torch.nn.Module):
        if input_shape is None:
            raise ClassifierError(f"{label}: give the input shape of one image as channels,height,width (--input-shape, or input_shape=)")
        model.eval()
        program = _export(model, tuple(input_shape), torch)
        if program is not None:  # one graph, run channels-last by our interpreter
            params, call, _, where = _lower_program(program, label)
        else:  # torchax's tensor environment runs what does not export (data-dependent Python, ...)
            from jaxfool.models.torch_lowerings import environment

            states, fn = torchax.extract_jax(model, env=environment())
            params, call = states, (lambda p, x: fn(p, (jnp.transpose(x, (0, 3, 1, 2)),)))
    else:
        raise ClassifierError(f"{label} is neither a torch.nn.Module nor a torch.export.ExportedProgram")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ClassifierError(f"{label}: input_shape must be channels,height,width, got {input_shape}")
    channels, height, width = input_shape
    conventions.check(channels)
    apply_fn = _apply_fn(call, conventions)
    with contextlib.ExitStack() as hooks:
        if isinstance(model, torch.nn.Module) and program is None:
            where = _module_path_tracker(model, input_shape, hooks)
        out = _probe(apply_fn, params, (height, width, channels), conventions, label, where)
    if len(out.shape) != 2:
        raise ClassifierError(f"{label} returned shape {tuple(out.shape)} for {out.shape[0]} images; expected logits [batch, classes]")
    found = int(out.shape[1])
    if num_classes is not None and int(num_classes) != found:
        raise ClassifierError(f"{label} returns {found} outputs per image, not num_classes={num_classes}")
    names = tuple(str(c) for c in class_names) if class_names is not None else tuple(str(i) for i in range(found))
    if len(names) != found:
        raise ClassifierError(f"{label}: {len(names)} class names for {found} outputs")
    outputs = conventions.outputs if conventions.outputs != "auto" else recognise_outputs(np.asarray(out))
    if outputs != conventions.outputs:
        apply_fn = _apply_fn(call, dataclasses.replace(conventions, outputs=outputs))
    params = jax.device_put(params)  # once; the engine passes them to every chunk as arguments
    return Classifier(
        name=label,
        apply_fn=apply_fn,
        params=params,
        input_shape=(height, width, channels),
        class_names=names,
        value_range=conventions.value_range,
        module=model,
        info={"source": "torch", "outputs": outputs, "mean": list(conventions.mean), "std": list(conventions.std),
              "torch": torch.__version__, "torchax": getattr(torchax, "__version__", "")},
    )


def recognise_outputs(out: np.ndarray) -> str:
    """``log_probs`` when every row's exponentials sum to 1, ``probs`` when every row is
    non-negative and sums to 1, else ``logits``. ``out``: float ``[N, K]`` from random images.

    >>> recognise_outputs(np.log(np.full((2, 4), 0.25)))
    'log_probs'
    >>> recognise_outputs(np.full((2, 4), 0.25)), recognise_outputs(np.zeros((2, 4)))
    ('probs', 'logits')
    """
    out = np.asarray(out, np.float64)
    if np.allclose(np.log(np.exp(out).sum(1)), 0.0, atol=1e-4):
        return "log_probs"
    if (out >= 0).all() and np.allclose(out.sum(1), 1.0, atol=1e-4):
        return "probs"
    return "logits"


def _apply_fn(call: Callable, conventions: TorchInput) -> Callable:
    """``apply_fn(params, images [N, H, W, C] in value_range) -> logits [N, K]`` around the
    lowered module ``call(params, x [N, H, W, C] normalised) -> output``."""
    mean, std, outputs = conventions.mean, conventions.std, conventions.outputs

    def apply_fn(params: Any, images: jax.Array) -> jax.Array:
        x = images
        if mean:  # per channel, the last axis
            x = (x - jnp.asarray(mean, x.dtype)) / jnp.asarray(std, x.dtype)
        out = call(params, x)
        if isinstance(out, (tuple, list)) and len(out) == 1:
            out = out[0]
        if outputs == "probs":  # log-softmax of log-probabilities is themselves: logits and log_probs need nothing
            out = jnp.log(jnp.maximum(out, jnp.finfo(out.dtype).tiny))
        return out

    return apply_fn


def _probe(apply_fn, params, image_shape, conventions: TorchInput, label: str, where: Callable[[Exception], str]):
    """Traces the lowered module on 4 random images (and under ``vmap`` over two lanes); runs
    it only where its outputs are to be recognised (``outputs="auto"``: the values are needed,
    and compiling costs seconds for a large network). Returns its output (an array, or its
    shape and dtype); one line naming the failing op and module if it fails."""
    low, high = conventions.value_range
    images = low + (high - low) * np.random.default_rng(0).random((4, *image_shape), np.float32)
    try:
        out = jax.jit(apply_fn)(params, images) if conventions.outputs == "auto" else jax.eval_shape(apply_fn, params, images)
    except ClassifierError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure is the module's, named in one line
        raise ClassifierError(f"{label} cannot be lowered to JAX: {where(e) or _first_line(e)}") from None
    if not hasattr(out, "shape"):
        raise ClassifierError(f"{label} returned {type(out).__name__}, not an array of logits [batch, classes]")
    try:
        jax.eval_shape(jax.vmap(apply_fn, in_axes=(None, 0)), params, jax.ShapeDtypeStruct((2, *images.shape), jnp.float32))
    except Exception as e:  # noqa: BLE001
        raise ClassifierError(f"{label} fails under jax.vmap, which every run uses over seeds and sweep points: {_first_line(e)}") from None
    return out


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def _unsupported_op(program) -> str:
    """``"op X has no JAX lowering (in module 'a.b', Kind)"`` for the first operation of an
    exported program that torchax cannot lower, or ``""``."""
    from torchax.ops import ops_registry

    env = __import__("torchax").default_env()
    for node in program.graph.nodes:
        target = node.target
        if node.op != "call_function" or not hasattr(target, "overloadpacket"):
            continue
        if ops_registry.all_aten_ops.get(target) or ops_registry.all_aten_ops.get(target.overloadpacket):
            continue
        try:
            env._get_op_or_decomp(target)  # torchax's own lookup: lowerings, then decompositions
            continue
        except Exception:  # noqa: BLE001 - OperatorNotFound: this is the op
            pass
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        path, kind = stack[-1] if stack else ("", "")
        kind = getattr(kind, "__name__", str(kind).rsplit(".", 1)[-1])
        return f"op {target.name()} has no JAX lowering" + (f" (in module {path!r}, {kind})" if path else "")
    return ""


def _module_path_tracker(module, input_shape: tuple[int, ...], hooks: contextlib.ExitStack) -> Callable[[Exception], str]:
    """Hooks (removed when ``hooks`` closes) that follow which submodule runs while torchax
    traces ``module``; the returned function explains an error: the unsupported op, found in
    the module's exported graph where it exports, else the innermost module the error left."""
    stack: list[str] = []
    for path, sub in module.named_modules():
        if path:
            # (a hook that returns something replaces the module's input or output: these return None)
            for handle in (sub.register_forward_pre_hook(lambda m, a, path=path: stack.append(path) and None),
                           sub.register_forward_hook(lambda m, a, o: stack.pop() and None)):
                hooks.callback(handle.remove)

    def where(error: Exception) -> str:
        inner = f" (in module {stack[-1]!r}, {type(module.get_submodule(stack[-1])).__name__})" if stack else ""
        try:
            import torch

            found = _unsupported_op(torch.export.export(module, (torch.zeros(1, *input_shape),)))
        except Exception:  # noqa: BLE001 - a module that does not export: the hooks' answer
            found = ""
        return found or f"{_first_line(error)}{inner}"

    return where


def _export(module, input_shape: tuple[int, ...], torch):
    """``module`` exported with a dynamic batch, else with a batch of one (a module whose code
    fixes the batch, e.g. ``x.reshape(len(x), -1)``: run image by image under ``vmap``), else
    ``None`` where ``torch.export`` cannot export it."""
    if len(input_shape) != 3 or min(input_shape) < 1:
        return None
    for batch, dynamic in ((2, ({0: torch.export.Dim("batch")},)), (1, None)):
        try:
            with torch.no_grad():
                return torch.export.export(module, (torch.zeros(batch, *input_shape),), dynamic_shapes=dynamic)
        except Exception:  # noqa: BLE001 - any export failure: the next way takes the module
            continue
    return None


def _lower_program(program, label: str):
    """``(params, call, (C, H, W), where)`` of an exported program with one image input."""
    signature = program.graph_signature
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in signature.user_inputs]
    if len(inputs) != 1 or "val" not in inputs[0].meta or len(inputs[0].meta["val"].shape) != 4:
        raise ClassifierError(f"{label}: the program must take one image batch [N, C, H, W]; it takes {len(inputs)} inputs")
    batch, *chw = inputs[0].meta["val"].shape
    if not all(isinstance(d, int) for d in chw):
        raise ClassifierError(f"{label}: the program's image shape must be fixed; it is {list(inputs[0].meta['val'].shape)}")
    from jaxfool.models.torch_lowerings import channels_last  # (imports our EfficientNet kernels: not at registry import)

    try:
        states, fn = _program_to_jax(program)
    except Exception as e:  # noqa: BLE001
        raise ClassifierError(f"{label} cannot be lowered to JAX: {_unsupported_op(program) or _first_line(e)}") from None

    if isinstance(batch, int):  # exported with a fixed batch: run it one image at a time, vmapped
        if batch != 1:
            raise ClassifierError(f"{label} was exported for batches of exactly {batch}; export it with a batch of 1 "
                                  "or a dynamic one (dynamic_shapes with torch.export.Dim)")

        def call(params, x):
            return jax.vmap(lambda image: fn(params, (channels_last(image[None]),))[0][0])(x)
    else:
        def call(params, x):
            return fn(params, (channels_last(x),))[0]

    def where(error: Exception) -> str:
        return _unsupported_op(program) or _first_line(error)

    return states, call, tuple(int(d) for d in chw), where


def _program_to_jax(program):
    """``(params, fn)``: an exported program run by our channels-last interpreter
    (:mod:`jaxfool.models.torch_lowerings`) after torchax's decompositions; ``params`` are its
    weights prepared once (kernels in the form they run, batch norms folded in);
    ``fn(params, (x,))`` returns the outputs."""
    import torchax
    from torchax.export import _extract_states_from_exported_program, decompositions

    from jaxfool.models.torch_lowerings import interpreter

    program = program.run_decompositions().run_decompositions(decompositions.DECOMPOSITIONS)
    _, states = _extract_states_from_exported_program(program)
    mutations = len(program.graph_signature.buffers_to_mutate)
    graph = interpreter(program.graph_module, len(states))

    def fn(params, inputs):
        return graph.call(params, inputs)[mutations:]

    return graph.plan.prepare(torchax.default_env().t2j_copy(states)), fn


def _target(spec: str) -> tuple[str, str]:
    """``torch:FILE.pt2`` -> ``(FILE.pt2, "")``; ``torch:FILE.py:FACTORY`` -> ``(FILE.py, FACTORY)``."""
    target = spec[len(PREFIX):]
    if target.endswith(".pt2"):
        return target, ""
    path, _, factory = target.rpartition(":")
    return path, factory


def source_files(spec: str, weights: str = "") -> list[str]:
    """The files a ``torch:`` classifier is read from (a cache keys on their versions)."""
    return [_target(spec)[0], *([weights] if weights else [])]


def load_torch_classifier(spec: str, weights: str = "", input_shape: Sequence[int] = (), conventions: TorchInput = TorchInput()) -> Classifier:
    """``torch:FILE.pt2`` (an exported program) or ``torch:FILE.py:FACTORY`` (a module built by
    the user's code, with ``weights``: a state dict read with ``weights_only=True``)."""
    torch, _ = require_torch()
    target, factory_name = _target(spec)
    if not factory_name:
        if weights:
            raise ClassifierError(f"--weights is for torch:FILE.py:FACTORY; {target} carries its own weights")
        if not os.path.isfile(target):
            raise ClassifierError(f"no exported program at {target}")
        try:
            program = torch.export.load(target)
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file
            raise ClassifierError(f"cannot read {target} as a torch.export program: {_first_line(e)}") from None
        return from_torch(program, input_shape=tuple(input_shape) or None, conventions=conventions, name=os.path.basename(target))
    path = target
    if not path.endswith(".py"):
        raise ClassifierError(f"torch classifier {spec!r}: give torch:FILE.pt2 or torch:FILE.py:FACTORY")
    module = _build(path, factory_name, torch)
    if weights:
        _load_state_dict(module, weights, torch)
    return from_torch(module, input_shape=tuple(input_shape) or None, conventions=conventions, name=f"{os.path.basename(path)}:{factory_name}")


def _build(path: str, factory_name: str, torch):
    if not os.path.isfile(path):
        raise ClassifierError(f"no Python file at {path}")
    spec = importlib.util.spec_from_file_location(f"jaxfool_user_model_{abs(hash(os.path.abspath(path)))}", path)
    code = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(code)
    except Exception as e:  # noqa: BLE001 - the user's file failed to import
        raise ClassifierError(f"{path} failed to import: {type(e).__name__}: {_first_line(e)}") from None
    factory = getattr(code, factory_name, None)
    if not callable(factory):
        raise ClassifierError(f"{path} has no function {factory_name!r}")
    made = factory()
    if not isinstance(made, torch.nn.Module):
        raise ClassifierError(f"{path}:{factory_name}() must return a torch.nn.Module, got {type(made).__name__}")
    return made


def _load_state_dict(module, weights: str, torch) -> None:
    """Reads ``weights`` with ``weights_only=True`` (a file carrying code is refused, never
    run) into ``module``; one line for each way that can fail."""
    import pickle

    if not os.path.isfile(weights):
        raise ClassifierError(f"no weights file at {weights}")
    try:
        with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
            state = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" not in str(e).lower():  # no forbidden GLOBAL: damaged, or not a pickle at all: say what the unpickler saw
            detail = str(e).partition("WeightsUnpickler error:")[2].strip() or str(e)
            raise ClassifierError(f"cannot read {weights} as a state dict: {_first_line(Exception(detail))}") from None
        raise ClassifierError(f"refused {weights}: it holds code or objects beyond tensors, and is read with safe loading only "
                              "(save it with torch.save(model.state_dict(), path))") from None
    except Exception as e:  # noqa: BLE001 - truncated or not a torch file
        raise ClassifierError(f"cannot read {weights} as a state dict: {_first_line(e)}") from None
    if not isinstance(state, dict):
        raise ClassifierError(f"{weights} holds a {type(state).__name__}, not a state dict (torch.save(model.state_dict(), path))")
    try:
        module.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - missing or unexpected keys, wrong shapes
        raise ClassifierError(f"{weights} does not fit the module: {_first_line(e)}") from None
