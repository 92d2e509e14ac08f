"""``fuse(model)``: every ``nn.Linear`` followed by a ReLU becomes one
``FusedLinearReLU`` holding the same Parameters.

Two routes, chosen per module from the root down:

* Sequentials (``nn.Sequential`` and custom containers whose forward only
  calls their children in order, like the chapter's ``MySequential``): the
  Linear's slot gets the fused module, the ReLU's slot an ``nn.Identity``.
  The container keeps its class; each child is then handled on its own,
  since a Sequential calls each child as a whole.
* Modules with their own forward: traced with ``torch.fx``; a Linear call
  whose only user is a ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu``,
  ``torch.relu_``, ``.relu()``) is fused in the graph, and the module
  becomes a ``torch.fx.GraphModule`` that keeps the original hierarchy, so
  state_dict keys and parameters are unchanged. Everything inside such a
  module (nested Sequentials too) goes through its graph.

A module that does not trace is left as it is, with its whole subtree. A
Linear is fused only where every place it appears in (parameter tying)
allows it, so a shared Linear stays one shared module.
"""

from __future__ import annotations

import copy
import functools
import logging
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.fx as fx
import torch.nn.functional as nnF
from torch import nn
from torch.nn.utils import parametrize

from .modules import Centered, FixedHiddenMLP, FusedLinearReLU

__all__ = ["FuseReport", "fuse"]

logger = logging.getLogger("fastlayers.fusion")

# fastlayers' own modules stay whole in a trace, like torch.nn's.
_FASTLAYERS_LEAVES = (FusedLinearReLU, Centered, FixedHiddenMLP)

_RELU_FUNCTIONS = {
    torch.relu: "torch.relu",
    torch.relu_: "torch.relu_",
    nnF.relu: "torch.nn.functional.relu",
}
_RELU_METHODS = {"relu": "Tensor.relu()", "relu_": "Tensor.relu_()"}
_RELU_NAMES = frozenset(_RELU_FUNCTIONS.values()) | frozenset(_RELU_METHODS.values())

_HOOK_ATTRS = {
    "forward": ("_forward_hooks",),
    "forward-pre": ("_forward_pre_hooks",),
    "backward": ("_backward_hooks", "_backward_pre_hooks"),
    "state_dict": (
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    ),
}
_CALL_HOOKS = ("forward", "forward-pre", "backward")  # the kinds a trace would drop

_NOT_FOLLOWED = "not followed by a ReLU"

# What every nn.Module keeps in its __dict__; anything else a GraphModule
# holds there is its own (graph, code) and is not copied over.
_PLAIN_MODULE_KEYS = frozenset(vars(nn.Module()))


class Fused(NamedTuple):
    """One fused pair: the Linear's path, the ReLU (a path or the function
    used) and the route, ``"sequential"`` or ``"fx"``."""

    linear: str
    relu: str
    route: str


class Skipped(NamedTuple):
    """An ``nn.Linear`` left as it is, and why."""

    path: str
    reason: str


@dataclass
class FuseReport:
    """What ``fuse`` did: ``fused`` pairs and ``skipped`` Linears (every
    ``nn.Linear``, subclasses included, that was not fused)."""

    fused: list[Fused] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"fastlayers.fuse: fused {len(self.fused)} Linear+ReLU pair(s), skipped {len(self.skipped)} Linear(s)"]
        lines += [f"  fused   {_show(f.linear)} + {_show_relu(f.relu)} ({f.route})" for f in self.fused]
        lines += [f"  skipped {_show(s.path)}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def fuse(
    model: nn.Module, inplace: bool = False, return_report: bool = False
) -> nn.Module | tuple[nn.Module, FuseReport]:
    """Replace each ``nn.Linear`` followed by a ReLU with a ``FusedLinearReLU``
    holding the same ``weight`` and ``bias`` Parameters.

    Sequentials (and Sequential-like containers) keep their class: the
    fused module takes the Linear's slot and ``nn.Identity`` the ReLU's, so
    state_dicts load both ways between fused and unfused models. A custom
    module whose forward fuses, e.g. one calling ``F.relu(self.fc(x))``, is
    returned as a ``torch.fx.GraphModule`` in its place (its class
    changes), keeping all its submodules, parameters, buffers and
    attributes. Modules that ``torch.fx`` cannot trace are left untouched.

    ``inplace=False`` works on a deep copy; ``inplace=True`` changes
    ``model`` itself (the result is ``model`` unless the root had to become
    a GraphModule). ``return_report=True`` returns ``(model, FuseReport)``;
    the report is also logged at DEBUG level on ``"fastlayers.fusion"``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"fastlayers.fuse: argument 'model' must be an nn.Module, got {type(model).__qualname__}")
    if not inplace:
        model = copy.deepcopy(model)  # keeps sharing within the model
    planner = _Planner(model)
    model, report = planner.apply()
    logger.debug("%s", report)
    return (model, report) if return_report else model


# ---------------------------------------------------------------------------
# helpers


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix and name else prefix or name


def _show(path: str) -> str:
    return f"'{path}'" if path else "the root module"


def _show_module(path: str) -> str:
    return f"module '{path}'" if path else "the root module"


def _inside(path: str, module: nn.Module) -> str:
    return f"inside {_show(path)} ({type(module).__qualname__}), which fuse does not look into"


def _show_relu(relu: str) -> str:
    return relu if relu in _RELU_NAMES else _show(relu)


def _hook_kinds(module: nn.Module) -> list[str]:
    return [kind for kind, attrs in _HOOK_ATTRS.items() if any(getattr(module, a, None) for a in attrs)]


def _relu_obstacle(relu: nn.Module) -> str | None:
    """Why this exact nn.ReLU cannot be folded away, or None."""
    kinds = _hook_kinds(relu)
    if kinds:
        return f"has {', '.join(kinds)} hooks"
    if parametrize.is_parametrized(relu):
        return "has parametrizations"
    return None


def _linear_obstacle(linear: nn.Linear) -> str | None:
    """Why this Linear can never be fused, wherever it sits, or None."""
    if isinstance(linear, nn.LazyLinear):
        return "is an uninitialized nn.LazyLinear"
    if parametrize.is_parametrized(linear):
        return "has parametrizations"
    if type(linear) is not nn.Linear:
        return f"is a subclass of nn.Linear ({type(linear).__qualname__}), not nn.Linear itself"
    kinds = _hook_kinds(linear)
    if kinds:
        return f"has {', '.join(kinds)} hooks"
    if set(linear._parameters) != {"weight", "bias"} or linear._buffers or linear._modules:
        # the fused module would change the state_dict
        return "has parameters, buffers or submodules of its own besides weight and bias"
    return None


def _make_fused(linear: nn.Linear) -> FusedLinearReLU:
    """A FusedLinearReLU over ``linear``'s own Parameters: built on the meta
    device so that nothing is allocated, then given the Parameters."""
    fused = FusedLinearReLU(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
    fused._parameters["weight"] = linear._parameters["weight"]
    fused._parameters["bias"] = linear._parameters["bias"]
    fused.training = linear.training
    return fused


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _trace(tracer: fx.Tracer, module: nn.Module) -> tuple[fx.Graph, dict]:
    """``tracer.trace(module)`` without leaving the attributes fx adds for
    tensor constants (``_tensor_constant0``) on the module; they are
    returned for the GraphModule instead."""
    before = set(vars(module))
    try:
        graph = tracer.trace(module)
    finally:
        extras = {k: module.__dict__.pop(k) for k in set(vars(module)) - before}
    return graph, extras


def _resolve(root: nn.Module, target: str):
    return functools.reduce(getattr, target.split("."), root)


class _ChildrenTracer(fx.Tracer):
    """Every direct child of the traced container is a leaf."""

    def __init__(self, container: nn.Module):
        super().__init__()
        self._children = {id(c) for c in container._modules.values() if c is not None}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return id(m) in self._children


class _FuseTracer(fx.Tracer):
    """torch.nn's leaves, fastlayers' modules and any nn.Linear subclass
    (LoRA and quantized wrappers stay whole) are leaves; records the modules
    it traces through."""

    def __init__(self):
        super().__init__()
        self.inlined: list[nn.Module] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        leaf = isinstance(m, (*_FASTLAYERS_LEAVES, nn.Linear)) or super().is_leaf_module(m, module_qualified_name)
        if not leaf:
            self.inlined.append(m)
        return leaf


def _is_sequential(module: nn.Module) -> bool:
    """An nn.Sequential, or a container whose forward traces to exactly
    ``placeholder -> child_1 -> ... -> child_n -> output`` in ``_modules``
    order."""
    if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
        return True
    children = list(module._modules.values())
    if not children or any(c is None for c in children):
        return False
    try:
        graph, _ = _trace(_ChildrenTracer(module), module)
    except Exception:
        return False
    nodes = list(graph.nodes)
    if len(nodes) != len(children) + 2 or nodes[0].op != "placeholder":
        return False
    prev = nodes[0]
    for node, child in zip(nodes[1:-1], children):
        if node.op != "call_module" or node.args != (prev,) or node.kwargs:
            return False
        try:
            if module.get_submodule(node.target) is not child:  # shared children: compare objects
                return False
        except AttributeError:
            return False
        prev = node
    return nodes[-1].op == "output" and nodes[-1].args == (prev,)


# ---------------------------------------------------------------------------
# planning and applying


class _Occurrence(NamedTuple):
    """One place a Linear is used. ``ok``: True (fusable here), False (not)
    or None (never called here, e.g. held but unused by a traced forward)."""

    place: str
    ok: bool | None
    reason: str
    relu: str = ""
    route: str = ""
    container: nn.Module | None = None  # sequential route: the container and the ReLU's slot
    relu_name: str = ""


class _Call(NamedTuple):
    node: fx.Node
    ok: bool
    reason: str
    relu_kind: str  # "module" (relu_target is the ReLU's path) or a function's name
    relu_target: str


class _Traced:
    """A custom module traced with _FuseTracer: its graph, the calls of each
    Linear in it, and the modules it calls as leaves."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.error: str | None = None
        self.graph: fx.Graph | None = None
        self.extras: dict = {}
        self.calls: dict[int, list[_Call]] = {}
        self.leaf_ids: set[int] = set()
        self.built: nn.Module | None = None
        tracer = _FuseTracer()
        try:
            self.graph, self.extras = _trace(tracer, module)
        except Exception as exc:
            self.error = f"does not trace with torch.fx: {_first_line(exc)}"
            return
        for inner in tracer.inlined:
            kinds = [k for k in _hook_kinds(inner) if k in _CALL_HOOKS]
            if kinds:
                # a GraphModule would no longer call this module, so its hooks would not run
                self.error = (
                    f"calls a {type(inner).__qualname__} with {', '.join(kinds)} hooks from its forward,"
                    " which a GraphModule would not run"
                )
                return
        for node in self.graph.nodes:
            if node.op != "call_module":
                continue
            sub = module.get_submodule(node.target)
            self.leaf_ids.add(id(sub))
            if isinstance(sub, nn.Linear):
                self.calls.setdefault(id(sub), []).append(self._classify(node))

    def _classify(self, node: fx.Node) -> _Call:
        users = list(node.users)
        if len(users) != 1:
            reason = "its output has other users besides a ReLU" if len(users) > 1 else _NOT_FOLLOWED
            return _Call(node, False, reason, "", "")
        user = users[0]
        if user.op == "call_module":
            relu = self.module.get_submodule(user.target)
            if type(relu) is nn.ReLU and user.args == (node,) and not user.kwargs:
                obstacle = _relu_obstacle(relu)
                if obstacle:  # the reason gets the ReLU's path in the model later
                    return _Call(node, False, obstacle, "module", user.target)
                return _Call(node, True, "", "module", user.target)
        elif user.op == "call_function" and user.target in _RELU_FUNCTIONS:
            rest = list(user.args[1:]) + list(user.kwargs.values())
            if user.args[:1] == (node,) and not any(isinstance(a, fx.Node) for a in rest):
                return _Call(node, True, "", _RELU_FUNCTIONS[user.target], "")
        elif user.op == "call_method" and user.target in _RELU_METHODS:
            if user.args == (node,) and not user.kwargs:
                return _Call(node, True, "", _RELU_METHODS[user.target], "")
        return _Call(node, False, _NOT_FOLLOWED, "", "")

    def under_leaf(self, rel: str) -> str | None:
        """The path of a module called as a leaf by the graph that holds the
        module at ``rel`` (a proper ancestor), or None."""
        mod, names = self.module, rel.split(".")
        for i, name in enumerate(names[:-1]):
            mod = mod._modules[name]
            if id(mod) in self.leaf_ids:
                return ".".join(names[: i + 1])
        return None

    def build(self, fused_ids: set[int]) -> nn.Module | None:
        """The GraphModule with the fusable calls' ReLUs erased, or None if
        nothing in this graph is fused."""
        if self.built is not None:
            return self.built
        calls = [c for key, cs in self.calls.items() if key in fused_ids for c in cs]
        if not calls:
            return None
        graph = self.graph
        for call in calls:
            relu = next(iter(call.node.users))
            relu.replace_all_uses_with(call.node)
            graph.erase_node(relu)
        graph.lint()
        module = self.module
        gm = _FusedGraphModule(module, graph, class_name=type(module).__name__)
        _adopt(gm, {**vars(module), **self.extras})
        for node in graph.nodes:
            if node.op in ("call_module", "get_attr"):
                try:
                    _resolve(gm, node.target)
                except AttributeError as exc:  # pragma: no cover - a bug here, not the user's
                    raise RuntimeError(f"fastlayers.fuse: the fused graph lost its target {node.target!r}") from exc
        self.built = gm
        return gm


_CONTAINER_KEYS = ("_modules", "_parameters", "_buffers", "_non_persistent_buffers_set")


def _adopt(gm: fx.GraphModule, state: dict) -> None:
    """Give ``gm`` the module state in ``state`` (a module's ``__dict__``).

    A GraphModule keeps only the submodules and tensors its graph uses;
    this puts back the original hierarchy, parameters, buffers, hooks and
    plain attributes, so state_dict keys and parameters stay the same and
    unused submodules are not lost. The graph's own entries stay."""
    own = set(vars(gm)) - _PLAIN_MODULE_KEYS
    for key, value in state.items():
        if key in own:
            continue
        if key in _CONTAINER_KEYS:
            value = copy.copy(value)  # own containers, the same objects inside
        gm.__dict__[key] = value


class _FusedGraphModule(fx.GraphModule):
    """A GraphModule that keeps its whole hierarchy through ``copy.deepcopy``
    and pickling, which otherwise rebuild it from the graph and drop what
    the graph does not use."""

    def __deepcopy__(self, memo):
        res = super().__deepcopy__(memo)
        # every value was copied into memo above: these look-ups reuse the copies
        _adopt(res, {k: copy.deepcopy(v, memo) for k, v in vars(self).items()})
        type(res).__name__ = type(self).__name__  # the original module's class name, as fuse gave it
        return res

    def __reduce__(self):
        rebuild, args = super().__reduce__()
        state = {k: v for k, v in vars(self).items() if k != "_graph"}  # the graph is rebuilt from the code
        return _unpickle_fused, (rebuild, args, state, type(self).__name__)


def _unpickle_fused(rebuild, args: tuple, state: dict, class_name: str) -> _FusedGraphModule:
    plain = rebuild(*args)
    gm = _FusedGraphModule(plain, plain.graph, class_name=class_name)
    _adopt(gm, state)
    return gm


class _Planner:
    """Walks the model once, recording every place each Linear is used; a
    Linear is fused only if no place forbids it and one allows it."""

    def __init__(self, root: nn.Module):
        self.root = root
        self.places: dict[int, list[str]] = {}
        self.objects: dict[int, nn.Module] = {}  # keeps every id alive and valid
        for path, m in root.named_modules(remove_duplicate=False):
            self.places.setdefault(id(m), []).append(path)
            self.objects[id(m)] = m
        self.visited: dict[int, list[str]] = {}  # places reached through Sequentials only
        self.occurrences: dict[int, list[_Occurrence]] = {}
        self.order: list[tuple[int, _Occurrence]] = []
        self.traced: dict[int, _Traced] = {}
        self.sequential: dict[int, bool] = {}
        self._walk(root, "")

    def _add(self, linear: nn.Module, occ: _Occurrence) -> None:
        self.occurrences.setdefault(id(linear), []).append(occ)
        self.order.append((id(linear), occ))

    def _opaque(self, module: nn.Module, path: str, reason: str, include_self: bool = True) -> None:
        """Every Linear in this subtree is used in ways fuse cannot see."""
        for rel, m in module.named_modules(remove_duplicate=False):
            if isinstance(m, nn.Linear) and (rel or include_self):
                self._add(m, _Occurrence(_join(path, rel), False, reason))

    def _is_sequential(self, module: nn.Module) -> bool:
        key = id(module)
        if key not in self.sequential:
            self.sequential[key] = _is_sequential(module)
        return self.sequential[key]

    def _walk(self, module: nn.Module, path: str) -> None:
        """``module`` at ``path`` is called as a whole (the root, or a child
        of a Sequential)."""
        self.visited.setdefault(id(module), []).append(path)
        if isinstance(module, nn.Linear):
            self._add(module, _Occurrence(path, False, _NOT_FOLLOWED))
            self._opaque(module, path, f"inside {_show(path)} ({type(module).__qualname__})", include_self=False)
        elif isinstance(module, (nn.ModuleList, nn.ModuleDict)):
            # no forward of its own: whoever uses it calls its children whole
            for name, child in module._modules.items():
                if child is not None:
                    self._walk(child, _join(path, name))
        elif self._is_sequential(module):
            items = list(module._modules.items())
            for i, (name, child) in enumerate(items):
                if child is None:
                    continue
                child_path = _join(path, name)
                if isinstance(child, nn.Linear):
                    self._add(child, self._slot(module, path, items, i))
                    inside = f"inside {_show(child_path)} ({type(child).__qualname__})"
                    self._opaque(child, child_path, inside, include_self=False)
                else:
                    self._walk(child, child_path)
        elif isinstance(module, _FASTLAYERS_LEAVES) or fx.Tracer().is_leaf_module(module, path):
            self._opaque(module, path, _inside(path, module))
        else:
            self._walk_traced(module, path)

    def _slot(self, container: nn.Module, path: str, items: list, i: int) -> _Occurrence:
        place = _join(path, items[i][0])
        if i + 1 >= len(items) or type(items[i + 1][1]) is not nn.ReLU:
            return _Occurrence(place, False, _NOT_FOLLOWED)
        relu_name, relu = items[i + 1]
        relu_place = _join(path, relu_name)
        obstacle = _relu_obstacle(relu)
        if obstacle:
            return _Occurrence(place, False, f"the ReLU at '{relu_place}' {obstacle}")
        return _Occurrence(place, True, "", relu_place, "sequential", container, relu_name)

    def _walk_traced(self, module: nn.Module, path: str) -> None:
        key = id(module)
        if key not in self.traced:
            self.traced[key] = _Traced(module)
        traced = self.traced[key]
        if traced.error:
            self._opaque(module, path, f"{_show_module(path)} {traced.error}")
            return
        # the graph's view: each call of a Linear, at the path the graph calls it by
        for calls in traced.calls.values():
            for call in calls:
                linear = module.get_submodule(call.node.target)
                relu = _join(path, call.relu_target) if call.relu_kind == "module" else call.relu_kind
                reason = call.reason
                if not call.ok and call.relu_kind == "module":
                    reason = f"the ReLU at '{relu}' {reason}"
                self._add(linear, _Occurrence(_join(path, call.node.target), call.ok, reason, relu, "fx"))
        # every other place of a Linear in this subtree
        for rel, m in module.named_modules(remove_duplicate=False):
            if not isinstance(m, nn.Linear) or not rel:
                continue
            leaf = traced.under_leaf(rel)
            if leaf is not None:
                reason = _inside(_join(path, leaf), module.get_submodule(leaf))
                self._add(m, _Occurrence(_join(path, rel), False, reason))
            elif id(m) not in traced.calls:
                self._add(m, _Occurrence(_join(path, rel), None, f"not called in the traced forward of {_show(path)}"))

    def _decide(self, key: int) -> str | None:
        """Why the Linear ``key`` cannot be fused, or None if it can."""
        linear = self.objects[key]
        obstacle = _linear_obstacle(linear)
        if obstacle:
            return obstacle
        occs = self.occurrences.get(key, [])
        negatives = []
        for occ in occs:
            if occ.ok is False:
                negatives.append(occ)
            elif occ.ok and occ.container is not None:
                # a Sequential that a custom forward can also reach might be indexed there
                container_places = self.places[id(occ.container)]
                reached = set(self.visited.get(id(occ.container), []))
                elsewhere = [p for p in container_places if p not in reached]
                if elsewhere:
                    reason = f"its Sequential is also held at '{elsewhere[0]}', inside a module with its own forward"
                    negatives.append(occ._replace(ok=False, reason=reason))
        places = self.places[key]
        if negatives:
            first = negatives[0]
            if len(places) > 1 and any(o.ok for o in occs):
                if first.reason == _NOT_FOLLOWED:
                    return f"shared Linear is {_NOT_FOLLOWED} at '{first.place}'"
                return f"shared Linear, at '{first.place}': {first.reason}"
            return first.reason
        if not any(o.ok for o in occs):
            return occs[0].reason if occs else "not reached"
        return None

    def apply(self) -> tuple[nn.Module, FuseReport]:
        report = FuseReport()
        linears = [k for k, m in self.objects.items() if isinstance(m, nn.Linear)]
        reasons = {k: self._decide(k) for k in linears}
        fused_ids = {k for k, r in reasons.items() if r is None}
        for k in linears:
            if reasons[k] is not None:
                report.skipped.append(Skipped(self.places[k][0], reasons[k]))
        replace: dict[int, nn.Module] = {k: _make_fused(self.objects[k]) for k in fused_ids}
        emptied: set[tuple[int, str]] = set()
        for key, occ in self.order:
            if key not in fused_ids or not occ.ok:
                continue
            report.fused.append(Fused(occ.place, occ.relu, occ.route))
            if occ.container is not None and (id(occ.container), occ.relu_name) not in emptied:
                emptied.add((id(occ.container), occ.relu_name))
                occ.container._modules[occ.relu_name] = nn.Identity()
        for key, traced in self.traced.items():
            if traced.error is None:
                gm = traced.build(fused_ids)
                if gm is not None:
                    replace[key] = gm
        return _replace_everywhere(self.root, replace), report


def _replace_everywhere(root: nn.Module, replace: dict[int, nn.Module]) -> nn.Module:
    """Swap each module in ``replace`` (by id) for its replacement in every
    slot it occupies, so shared modules stay shared."""
    root = replace.get(id(root), root)
    seen: set[int] = set()
    stack = [root]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        for name, child in list(module._modules.items()):
            if child is None:
                continue
            new = replace.get(id(child))
            if new is not None:
                module._modules[name] = child = new
            stack.append(child)
    return root
