"""fastlayers under torch.distributed, two CPU processes over gloo: DDP,
FSDP2 (fully_shard) and tensor parallelism on DTensor (fastlayers/sharding.py),
each against one process computing the same thing alone, in float64."""

import copy
import datetime
import faulthandler
import os
import pathlib
import subprocess
import sys
import time
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import fastlayers
from fastlayers import Centered, FixedHiddenMLP, FusedLinearReLU

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"
)

WORLD = 2
TIMEOUT_S = 120  # a whole case, spawn included; a hung collective fails at 60 s
ROWS = 8  # the full batch; each rank takes ROWS // WORLD


# ---- running a case on two processes ------------------------------------------


def _worker(rank, case, out_dir, stacks_after_s):
    out_dir = pathlib.Path(out_dir)
    torch.set_num_threads(1)  # two processes on a 2-core machine
    # The stack of a worker that crashes, or hangs until the test kills it.
    stacks = open(out_dir / f"rank{rank}.stack", "w")
    faulthandler.enable(file=stacks)
    faulthandler.dump_traceback_later(stacks_after_s, file=stacks)
    try:
        store = dist.FileStore(str(out_dir / "store"), WORLD)
        dist.init_process_group(
            "gloo", store=store, rank=rank, world_size=WORLD, timeout=datetime.timedelta(seconds=60)
        )
        case(rank)
    except BaseException:
        # Written before the peer notices this rank is gone and fails in its
        # turn, so the test can put the first failure first.
        (out_dir / f"rank{rank}.traceback").write_text(traceback.format_exc())
        raise
    finally:
        faulthandler.cancel_dump_traceback_later()
        if dist.is_initialized():
            dist.destroy_process_group()


def run_on_two_processes(case, tmp_path):
    """Runs case(rank) on two spawned processes. An exception in either fails
    the test with every worker's traceback, the earliest first; a worker that
    crashes, or still runs after TIMEOUT_S (then killed), fails it with its stack."""
    ctx = mp.start_processes(
        _worker, args=(case, str(tmp_path), max(TIMEOUT_S - 10, 1)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers did not finish within {TIMEOUT_S} s")
        return
    except Exception as e:  # ProcessRaisedException, ProcessExitedException, TimeoutError
        failure = e
    for p in ctx.processes:
        if p.is_alive():
            p.kill()
    # Per rank its traceback, else the stack faulthandler wrote at a crash or a hang.
    reports = []
    for rank in range(WORLD):
        for f in (tmp_path / f"rank{rank}.traceback", tmp_path / f"rank{rank}.stack"):
            if f.exists() and f.stat().st_size:
                reports.append(f)
                break
    reports.sort(key=lambda f: f.stat().st_mtime)
    details = "\n".join(f"--- {f.stem} ---\n{f.read_text()}" for f in reports) or str(failure)
    summary = f"{type(failure).__name__}: {str(failure).strip().splitlines()[0]}"
    pytest.fail(f"{case.__name__} failed on the workers ({summary}):\n{details}", pytrace=False)


# ---- the models --------------------------------------------------------------
#
# Data parallelism averages the per-rank gradients, i.e. it differentiates the
# mean of the per-rank losses. For a model that treats each row alone that is
# the full-batch loss. Centered() (the mean over the whole batch) and
# FixedHiddenMLP (its halving count comes from the whole batch) couple the rows,
# so there the single-process reference is the mean of the two half-batch
# losses: what DDP and FSDP promise for such a model.


def _per_row_model():
    return nn.Sequential(FusedLinearReLU(20, 32), Centered(dim=-1), nn.Linear(32, 20), FusedLinearReLU(20, 8))


def _batch_coupled_model():
    return nn.Sequential(FusedLinearReLU(20, 32), Centered(), nn.Linear(32, 20), FixedHiddenMLP(20))


def _loss(model, x):
    out = model(x)
    return out if out.dim() == 0 else out.square().mean()


MODELS = [(_per_row_model, "full batch"), (_batch_coupled_model, "mean of half batches")]


def _data_parallel_setup(make_model):
    """The same model, copy and batch on every rank (same seed)."""
    torch.manual_seed(0)
    model = make_model().double()
    reference = copy.deepcopy(model)
    x = torch.randn(ROWS, 20, dtype=torch.float64)
    return model, reference, x


def _reference_loss(reference, x, kind):
    if kind == "full batch":
        return _loss(reference, x)
    return sum(_loss(reference, half) for half in x.chunk(WORLD)) / WORLD


def _local_rows(x, rank):
    return x.chunk(WORLD)[rank]


# ---- a. DistributedDataParallel ---------------------------------------------------


def _case_ddp(rank):
    from torch.nn.parallel import DistributedDataParallel as DDP

    for make_model, kind in MODELS:
        model, reference, x = _data_parallel_setup(make_model)
        ddp = DDP(model)
        _loss(ddp, _local_rows(x, rank)).backward()
        _reference_loss(reference, x, kind).backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad, msg=lambda m: f"{make_model.__name__} ({kind}), {name}: {m}")


def test_ddp_gradients_match_one_process(tmp_path):
    run_on_two_processes(_case_ddp, tmp_path)


# ---- b. FSDP2 ------------------------------------------------------------------


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard  # torch >= 2.6
    except ImportError:
        from torch.distributed._composable.fsdp import fully_shard  # torch 2.4, 2.5
    return fully_shard


def _case_fsdp2(rank):
    from torch.distributed.tensor import Shard

    fully_shard = _fully_shard()
    for make_model, kind in MODELS:
        model, reference, x = _data_parallel_setup(make_model)
        for layer in model:
            if next(layer.parameters(), None) is not None:
                fully_shard(layer)
        fully_shard(model)
        # each rank keeps a Shard(0) piece of every parameter
        assert all(p.placements == (Shard(0),) for p in model.parameters())

        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
        _loss(model, _local_rows(x, rank)).backward()
        _reference_loss(reference, x, kind).backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.grad.full_tensor(), q.grad, msg=lambda m: f"{kind}, grad of {name}: {m}")
        opt.step()
        ref_opt.step()
        for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
            torch.testing.assert_close(p.full_tensor(), q, msg=lambda m: f"{kind}, {name} after a step: {m}")


def test_fsdp2_gradients_and_step_match_one_process(tmp_path):
    try:
        _fully_shard()
    except ImportError as e:
        pytest.skip(f"no FSDP2 fully_shard in torch {torch.__version__}: {e}")
    run_on_two_processes(_case_fsdp2, tmp_path)


# ---- c. tensor parallelism on DTensor -----------------------------------------------


def _colwise(module, mesh):
    """ColwiseParallel for a FusedLinearReLU. torch's ColwiseParallel accepts
    only nn.Linear and nn.Embedding (a FusedLinearReLU is not an nn.Linear, on
    purpose: see fastlayers.LINEAR_TYPES), so the same layout by hand: weight
    and bias Shard(0), a Replicate input, and the output left a DTensor."""
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor

    def shard_out_features(name, mod, mesh):
        for pname, p in list(mod.named_parameters(recurse=False)):
            mod.register_parameter(pname, nn.Parameter(distribute_tensor(p, mesh, [Shard(0)])))

    def replicate_input(mod, inputs, mesh):
        x = inputs[0]
        return x if isinstance(x, DTensor) else DTensor.from_local(x, mesh, [Replicate()], run_check=False)

    return distribute_module(module, mesh, shard_out_features, replicate_input)


def _case_tensor_parallel(rank):
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor, init_device_mesh
    from torch.distributed.tensor.debug import CommDebugMode
    from torch.distributed.tensor.parallel import RowwiseParallel, parallelize_module

    mesh = init_device_mesh("cpu", (WORLD,))
    ops = torch.ops.fastlayers
    torch.manual_seed(0)

    # A column-parallel FusedLinearReLU, with and without bias: each rank
    # computes its half of out_features from its own weight rows.
    for bias in (True, False):
        fc = FusedLinearReLU(16, 32, bias=bias).double()
        reference = copy.deepcopy(fc)
        _colwise(fc, mesh)
        x = torch.randn(4, 3, 16, dtype=torch.float64, requires_grad=True)
        x_ref = x.detach().clone().requires_grad_()
        g = torch.randn(4, 3, 32, dtype=torch.float64)
        with CommDebugMode() as comms:
            y = fc(x)
        assert comms.get_total_counts() == 0, f"the forward communicated: {comms.get_comm_counts()}"
        assert y.placements == (Shard(2),) and y._local_tensor.shape == (4, 3, 16)
        (y.full_tensor() * g).sum().backward()
        (reference(x_ref) * g).sum().backward()
        torch.testing.assert_close(y.full_tensor(), reference(x_ref))
        torch.testing.assert_close(x.grad, x_ref.grad)
        assert fc.weight.grad.placements == (Shard(0),) and fc.weight.grad._local_tensor.shape == (16, 16)
        torch.testing.assert_close(fc.weight.grad.full_tensor(), reference.weight.grad)
        if bias:
            assert fc.bias.grad._local_tensor.shape == (16,)
            torch.testing.assert_close(fc.bias.grad.full_tensor(), reference.bias.grad)

    # The Megatron MLP: column-parallel FusedLinearReLU into a row-parallel
    # nn.Linear; one all-reduce in the forward, none between the two layers.
    mlp = nn.Sequential(FusedLinearReLU(16, 32), nn.Linear(32, 16)).double()
    reference = copy.deepcopy(mlp)
    _colwise(mlp[0], mesh)
    parallelize_module(mlp[1], mesh, RowwiseParallel(input_layouts=Shard(-1)))
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    with CommDebugMode() as comms:
        out = mlp(x)
    assert comms.get_total_counts() == 1, f"expected one all-reduce: {comms.get_comm_counts()}"
    out.square().sum().backward()
    reference(x_ref).square().sum().backward()
    torch.testing.assert_close(out, reference(x_ref))
    torch.testing.assert_close(x.grad, x_ref.grad)
    for (name, p), q in zip(mlp.named_parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p.grad.full_tensor(), q.grad, msg=lambda m: f"MLP, grad of {name}: {m}")

    # Batch-parallel: rows sharded, parameters replicated; the parameter
    # gradients come out Partial and sum to the full-batch ones.
    fc = FusedLinearReLU(16, 8).double()
    w = nn.Parameter(distribute_tensor(fc.weight.detach(), mesh, [Replicate()]))
    b = nn.Parameter(distribute_tensor(fc.bias.detach(), mesh, [Replicate()]))
    x = torch.randn(6, 16, dtype=torch.float64)
    y = fastlayers.functional.linear_relu(distribute_tensor(x, mesh, [Shard(0)]), w, b)
    assert y.placements == (Shard(0),) and y._local_tensor.shape == (3, 8)
    y.sum().backward()
    fc(x).sum().backward()
    torch.testing.assert_close(y.full_tensor(), fc(x))
    torch.testing.assert_close(w.grad.full_tensor(), fc.weight.grad)
    torch.testing.assert_close(b.grad.full_tensor(), fc.bias.grad)

    # center stays sharded along the dims it does not reduce over, and a
    # sharded dim it does reduce over is gathered first. The calls differ
    # only in `dim`: each must get its own sharding, not the first one's.
    x = torch.randn(6, 5, 4, dtype=torch.float64)
    dx = distribute_tensor(x, mesh, [Shard(0)])
    for dim, placement in (([1], Shard(0)), ([0], Replicate()), ([-1, 1], Shard(0)), (None, Replicate())):
        out = ops.center.default(dx, dim)
        assert out.placements == (placement,), f"center(dim={dim}) on Shard(0): {out.placements}"
        torch.testing.assert_close(out.full_tensor(), fastlayers.functional.center(x, tuple(dim) if dim else None))
    # and its backward (center again, on the gradient) keeps the sharding too
    dx = distribute_tensor(x, mesh, [Shard(0)]).requires_grad_()
    x_ref = x.clone().requires_grad_()
    g = torch.randn_like(x)
    (fastlayers.functional.center(dx, 2).full_tensor() * g).sum().backward()
    (fastlayers.functional.center(x_ref, 2) * g).sum().backward()
    assert dx.grad.placements == (Shard(0),)
    torch.testing.assert_close(dx.grad.full_tensor(), x_ref.grad)


def test_tensor_parallel_runs_shard_locally_and_matches_one_process(tmp_path):
    run_on_two_processes(_case_tensor_parallel, tmp_path)


# ---- the registration ------------------------------------------------------------

_CHECK_RULES = """
import sys
{first}
assert {lazy}, "import fastlayers loaded torch.distributed.tensor"
from torch.distributed.tensor import DTensor
funcs = DTensor._op_dispatcher.sharding_propagator.op_strategy_funcs
ops = torch.ops.fastlayers
missing = [op for op in (ops.linear_relu.default, ops.linear_relu_backward_input.default,
                         ops.linear_relu_backward_params.default, ops.center.default) if op not in funcs]
assert not missing, f"no sharding rule for {{missing}}"
"""


def test_sharding_rules_register_in_either_import_order():
    """fastlayers imported before torch.distributed.tensor (the import hook)
    and after it (registered at once), each in a fresh interpreter; importing
    fastlayers alone must not pull in DTensor (~0.7 s)."""
    orders = {
        "fastlayers first": ("import torch, fastlayers", "'torch.distributed.tensor' not in sys.modules"),
        "DTensor first": ("import torch.distributed.tensor, fastlayers", "True"),
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-W", "error", "-c", _CHECK_RULES.format(first=first, lazy=lazy)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        for name, (first, lazy) in orders.items()
    }
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        assert proc.returncode == 0, f"{name}:\n{out}"
