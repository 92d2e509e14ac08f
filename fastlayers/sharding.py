"""DTensor sharding rules for the fused ops, so they run shard-locally under
tensor parallelism (a column-parallel FusedLinearReLU, a batch-sharded
Centered) instead of failing with "no sharding strategy registered".
torch's ColwiseParallel style takes only nn.Linear and nn.Embedding, so a
FusedLinearReLU's weight and bias are placed with distribute_module /
distribute_tensor (Shard(0)); see tests/test_distributed.py.

Registered through the public ``torch.distributed.tensor.experimental.
register_sharding``. Importing torch.distributed.tensor costs ~0.7 s, far too
much to pay on every ``import fastlayers``, so the rules are registered when
something else imports it first: at once if it is already loaded, else by a
one-shot import hook the moment it finishes loading. Without torch.distributed
(or a torch whose DTensor lacks register_sharding) nothing is registered.

Per op, the acceptable (output placements, input placements) for one mesh
dimension; DTensor expands them over the mesh and picks the cheapest:

- linear_relu: column-parallel (weight and bias Shard(0), input Replicate:
  output sharded along its last dim), batch-parallel (input sharded along a
  leading dim, weight and bias Replicate), or all Replicate. Row-parallel
  (input and weight sharded along in_features) is not offered: it would need
  a Partial sum *before* the ReLU.
- linear_relu_backward_input / _params: the transposes of those (the
  column-parallel input gradient and the batch-parallel parameter gradients
  come out Partial, to be summed across ranks).
- center: sharded along any dim it does not reduce over, or Replicate.
"""

import dataclasses
import importlib.abc
import sys
import warnings

import torch

_DTENSOR = "torch.distributed.tensor"


def _strategies(Partial, Replicate, Shard):
    """The rule functions, built once the placement types can be imported."""
    R = Replicate()

    def linear_relu(input, weight, bias):
        last = input.ndim - 1
        b = None if bias is None else R
        rules = [([R], [R, R, b])]  # first: the choice when everything is replicated already
        rules.append(([Shard(last)], [R, Shard(0), None if bias is None else Shard(0)]))
        rules += [([Shard(d)], [Shard(d), R, b]) for d in range(last)]
        return rules

    def linear_relu_backward_input(grad_output, output, weight):
        last = grad_output.ndim - 1
        rules = [([R], [R, R, R])]
        # out_features sharded: each rank holds part of the product's inner sum
        rules.append(([Partial()], [Shard(last), Shard(last), Shard(0)]))
        rules += [([Shard(d)], [Shard(d), Shard(d), R]) for d in range(last)]
        return rules

    def linear_relu_backward_params(grad_output, output, input, bias_grad):
        last = grad_output.ndim - 1
        # An unrequested gradient is an empty (0,) tensor: Replicate, whatever the rest.
        has_w = input is not None

        def outputs(p):
            return [p if has_w else R, p if bias_grad else R]

        rules = [(outputs(R), [R, R, R if has_w else None, None])]
        rules.append((outputs(Shard(0)), [Shard(last), Shard(last), R if has_w else None, None]))
        # rows sharded: each rank holds part of the sums over rows
        rules += [(outputs(Partial()), [Shard(d), Shard(d), Shard(d) if has_w else None, None]) for d in range(last)]
        return rules

    def center(input, dim=None):
        ndim = input.ndim
        reduced = range(ndim) if not dim else {d % max(ndim, 1) for d in dim}
        rules = [([R], [R, None])]
        rules += [([Shard(d)], [Shard(d), None]) for d in range(ndim) if d not in reduced]
        return rules

    return {
        "linear_relu": linear_relu,
        "linear_relu_backward_input": linear_relu_backward_input,
        "linear_relu_backward_params": linear_relu_backward_params,
        "center": center,
    }


def _register():
    try:
        from torch.distributed.tensor import DTensor, Partial, Replicate, Shard
        from torch.distributed.tensor.experimental import register_sharding
    except ImportError:  # an older DTensor: leave the ops unsharded
        return
    rules = _strategies(Partial, Replicate, Shard)
    ops = torch.ops.fastlayers
    for name in ("linear_relu", "linear_relu_backward_input", "linear_relu_backward_params"):
        register_sharding(getattr(ops, name).default)(rules[name])
    # register_sharding keys DTensor's sharding cache on tensor placements and
    # plain int arguments only: a bool or an int[] is left out, so a call
    # differing only there reuses the first call's sharding. bias_grad only
    # picks the (empty) grad_bias's placement; center's dim decides which dims
    # may stay sharded, so center is registered only where its dim can be
    # made part of the key (else DTensor says it has no rule, rather than
    # silently centering a sharded dim).
    infos = getattr(
        getattr(getattr(DTensor, "_op_dispatcher", None), "sharding_propagator", None), "op_to_schema_info", None
    )
    if isinstance(infos, dict):
        _key_on_args_from(infos, ops.linear_relu_backward_params.default, 3)
        register_sharding(ops.center.default)(rules["center"])
        _key_on_args_from(infos, ops.center.default, 1)


def _key_on_args_from(infos, op, index):
    """Hashes op's arguments from position `index` on into the cache key."""
    info = infos.get(op)
    if info is not None:
        infos[op] = dataclasses.replace(info, static_argnum=min(info.static_argnum, index))


def _register_or_warn():
    # Reached from inside `import torch.distributed.tensor`: a change in
    # DTensor's internals must cost the sharding rules, not that import.
    try:
        _register()
    except Exception as e:
        warnings.warn(
            f"fastlayers: could not register the DTensor sharding rules ({e!r}); "
            "the fused ops will not run on DTensors",
            RuntimeWarning,
            stacklevel=2,
        )


class _RegisterOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it lets the other finders locate
    torch.distributed.tensor, has that loader register the rules once the
    package has loaded, and then leaves sys.meta_path. (A find_spec probe
    that loads nothing leaves it in place, for the real import.)"""

    def find_spec(self, fullname, path, target=None):
        if fullname != _DTENSOR:
            return None
        for finder in sys.meta_path:
            if finder is not self and hasattr(finder, "find_spec"):
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return spec

        def exec_then_register(module):
            try:
                exec_module(module)
            finally:
                del loader.exec_module  # back to the class's method
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            _register_or_warn()

        # On the loader instance rather than a wrapper loader, so that
        # module.__loader__ stays the real one.
        try:
            loader.exec_module = exec_then_register
        except AttributeError:  # a loader with __slots__: no rules, but the import works
            pass
        return spec


if torch.distributed.is_available():
    if _DTENSOR in sys.modules:
        _register_or_warn()
    else:
        sys.meta_path.insert(0, _RegisterOnImport())
