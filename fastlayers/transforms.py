"""The torch.func route: what the ops run while a torch.func transform
(grad, vjp, jacrev, jacfwd, vmap, hessian ...) is active.

The ops' autograd is a C++ torch::autograd::Function, the cheapest there is
per call, but functorch cannot differentiate through one. So the functional
API and the modules check `transforms_active()` (~0.04 µs) and, only then,
call the Python autograd.Functions below instead; the eager path is unchanged.

Per op, in one place each:
- the forward runs the op's own kernel;
- the batching rule (torch.library.register_vmap) folds vmap's batch
  dimension into the kernel's rows or reduced dims where the op allows it,
  so vmap does not loop; FixedHiddenMLP's halving count is one per sample,
  so its rule runs the kernel once per sample;
- backward and jvp are written in differentiable ATen (center: its own op),
  so transforms compose: per-sample gradients (vmap over grad), jacrev,
  jacfwd, hessian.
"""

import torch

from . import ops  # noqa: F401  (fake kernels; the ops are registered)

if hasattr(torch._C, "_are_functorch_transforms_active"):
    transforms_active = torch._C._are_functorch_transforms_active
else:  # an older torch: the interpreter stack is empty outside transforms

    def transforms_active() -> bool:
        return torch._C._functorch.peek_interpreter_stack() is not None


_linear_relu = torch.ops.fastlayers.linear_relu.default
_center = torch.ops.fastlayers.center.default
_fixed_hidden_mlp = torch.ops.fastlayers.fixed_hidden_mlp.default


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1, t.shape[-1])


def _where_positive(ref: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """t where ref > 0, else 0 (NaN in ref included, as the kernels do)."""
    return torch.where(ref > 0, t, torch.zeros((), dtype=t.dtype, device=t.device))


def _linear_tangent(a, a_t, weight, weight_t, bias_t, out_shape, like):
    """The tangent of ``a @ weight.T + bias`` (zeros where no input has one)."""
    t = torch.zeros(out_shape, dtype=like.dtype, device=like.device)
    if a_t is not None:
        t = t + a_t @ weight.mT
    if weight_t is not None:
        t = t + a @ weight_t.mT
    if bias_t is not None:
        t = t + bias_t
    return t


def _halving_scale(halvings: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """2^-k, exact, in like's dtype."""
    return torch.ldexp(torch.ones((), dtype=like.dtype, device=like.device), -halvings)


def _move_bdim(t, bdim, size=None):
    """Batch dim first; an unbatched argument stays as it is (size None) or
    is expanded to the batch size."""
    if bdim is None:
        return t if size is None or t is None else t.expand(size, *t.shape)
    return t.movedim(bdim, 0)


# ---- linear_relu -------------------------------------------------------------


class LinearReLUFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias):
        return _linear_relu(input, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, bias = inputs
        ctx.has_bias = bias is not None
        ctx.save_for_backward(input, weight, output)
        ctx.save_for_forward(input, weight, output)

    @staticmethod
    def backward(ctx, grad):
        input, weight, output = ctx.saved_tensors
        masked = _where_positive(output, grad)
        grad_input = masked @ weight if ctx.needs_input_grad[0] else None
        grad_weight = _rows(masked).mT @ _rows(input) if ctx.needs_input_grad[1] else None
        grad_bias = _rows(masked).sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_input, grad_weight, grad_bias

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t):
        input, weight, output = ctx.saved_tensors
        return _where_positive(output, _linear_tangent(input, input_t, weight, weight_t, bias_t, output.shape, output))


def _linear_relu_vmap(info, in_dims, input, weight, bias):
    x_dim, w_dim, b_dim = in_dims
    if w_dim is None and b_dim is None:
        # Only the activations are batched: the batch is more rows.
        return _linear_relu(input.movedim(x_dim, 0), weight, bias), 0
    # Batched parameters (ensembles, functional_call over stacked weights):
    # one matrix product per sample, which the kernel has no form for.
    n = info.batch_size
    x = _move_bdim(input, x_dim, n)
    w = _move_bdim(weight, w_dim, n)
    lead = x.shape[1:-1]
    out = torch.bmm(x.reshape(n, -1, x.shape[-1]), w.mT)
    if bias is not None:
        out = out + _move_bdim(bias, b_dim, n).unsqueeze(1)
    return torch.relu(out).reshape(n, *lead, w.shape[1]), 0


# ---- center ------------------------------------------------------------------


def center(input, dim):
    """The op, through the torch.func route when a transform is active."""
    if transforms_active():
        return CenterFunction.apply(input, dim)
    return _center(input, dim)


class CenterFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, dim):
        return _center(input, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        # Centering is self-adjoint.
        return center(grad, ctx.dim), None

    @staticmethod
    def jvp(ctx, input_t, _dim_t):
        return center(input_t, ctx.dim)


def _center_vmap(info, in_dims, input, dim=None):
    x = input.movedim(in_dims[0], 0)
    dims = [d + 1 for d in ops.center_dims(x[0], dim)]
    if not dims:  # a 0-d sample: x - mean(x) is x - x (NaN and inf stay NaN)
        return x - x, 0
    return _center(x, dims), 0


# ---- fixed_hidden_mlp ---------------------------------------------------------


class FixedHiddenMLPFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(input, weight, bias, rand_weight, return_sum):
        return _fixed_hidden_mlp(input, weight, bias, rand_weight, return_sum)

    @staticmethod
    def setup_context(ctx, inputs, output):
        input, weight, _bias, rand_weight, return_sum = inputs
        _, hidden, halvings = output
        ctx.return_sum = return_sum
        ctx.mark_non_differentiable(hidden, halvings)
        ctx.save_for_backward(input, weight, rand_weight, hidden, halvings)
        ctx.save_for_forward(input, weight, rand_weight, hidden, halvings)

    @staticmethod
    def backward(ctx, grad, _grad_hidden, _grad_halvings):
        # h1 = x W^T + b;  h2 = relu(h1 C + 1);  h3 = h2 W^T + b;  out = h3 / 2^k,
        # summed or not; k held constant, C (rand_weight) gets no gradient.
        input, weight, rand_weight, hidden, halvings = ctx.saved_tensors
        x = _rows(input)
        scale = _halving_scale(halvings, grad)
        g3 = (grad * scale).expand(hidden.shape) if ctx.return_sum else _rows(grad * scale)
        g1 = _where_positive(hidden, g3 @ weight) @ rand_weight.mT
        grad_input = (g1 @ weight).reshape(input.shape)
        grad_weight = g3.mT @ hidden + g1.mT @ x
        grad_bias = g3.sum(0) + g1.sum(0)
        return grad_input, grad_weight, grad_bias, None, None

    @staticmethod
    def jvp(ctx, input_t, weight_t, bias_t, _rand_weight_t, _return_sum_t):
        input, weight, rand_weight, hidden, halvings = ctx.saved_tensors
        rows, features = hidden.shape
        x_t = None if input_t is None else _rows(input_t)
        h1_t = _linear_tangent(_rows(input), x_t, weight, weight_t, bias_t, (rows, features), hidden)
        h2_t = _where_positive(hidden, h1_t @ rand_weight)
        h3_t = _linear_tangent(hidden, h2_t, weight, weight_t, bias_t, (rows, features), hidden)
        h3_t = h3_t * _halving_scale(halvings, h3_t)
        out_t = h3_t.sum() if ctx.return_sum else h3_t.reshape(input.shape)
        return out_t, None, None


def _fixed_hidden_mlp_vmap(info, in_dims, input, weight, bias, rand_weight, return_sum=True):
    # Each sample has its own halving count, which the kernel finds over its
    # whole input: one call per sample.
    n = info.batch_size
    args = [_move_bdim(t, d, n) for t, d in zip((input, weight, bias, rand_weight), in_dims[:4])]
    results = [_fixed_hidden_mlp(*(a[i] for a in args), return_sum) for i in range(n)]
    return tuple(torch.stack(r) for r in zip(*results)), (0, 0, 0)


# A torch without register_vmap keeps functorch's own per-sample loop.
if hasattr(torch.library, "register_vmap"):
    torch.library.register_vmap("fastlayers::linear_relu", _linear_relu_vmap)
    torch.library.register_vmap("fastlayers::center", _center_vmap)
    torch.library.register_vmap("fastlayers::fixed_hidden_mlp", _fixed_hidden_mlp_vmap)
