"""One planning decision as one CUDA graph (CUDA only; docs/algorithm.md §4, §9).

An eager decision on a GPU launches a few hundred small kernels (the π rollouts, per iteration the
Gaussian samples, H steps of every head, the elites, the moments), each costing more to launch
than to run. ``GraphedDecision`` captures ``Planner.decide`` once per ``eval_mode`` and then
replays it: the latent and the warm-start mean are copied into static input buffers, the graph
runs, and its static outputs are the decision. ``decide`` is written without host syncs (no
``int()`` or ``.item()``; the elite pick is an index tensor) so it can be captured.

Random draws: ``decide`` draws from the planner's generator, which on CUDA is a device-side
generator registered with each graph, so every replay advances it as the eager code would (the
same calls in the same order). The warm-up runs that capture needs are undone by restoring the
generator's state before capturing.

How a graph is made, captured and replayed is a ``GraphBackend``; ``CudaBackend`` is the real
one. Tests drive the same plumbing on the CPU with a backend that re-runs the captured function
(tests/core/test_device.py). Any error while warming up or capturing makes ``run`` return None
with ``error`` set, and the planner goes on eagerly.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any, Protocol

import torch

DecideFn = Callable[[torch.Tensor, torch.Tensor, bool], Any]   # (z, mean0, eval_mode) → Decision


def graph_supported(device: torch.device) -> bool:
    """Graphs are taken only on a CUDA device that torch can use."""
    return device.type == "cuda" and torch.cuda.is_available()


class GraphBackend(Protocol):
    def warm_up(self, fn: Callable[[], Any], times: int) -> None: ...

    def new_graph(self, generator: torch.Generator | None) -> Any: ...

    def capture(self, graph: Any, fn: Callable[[], Any]) -> Any: ...

    def replay(self, graph: Any) -> None: ...


class CudaBackend:
    """torch.cuda graphs: warm-up on a side stream (lazy inits, cuBLAS workspaces), capture with
    the planner's generator registered, replay."""

    def warm_up(self, fn: Callable[[], Any], times: int) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(times):
                fn()
        torch.cuda.current_stream().wait_stream(stream)

    def new_graph(self, generator: torch.Generator | None) -> Any:
        graph = torch.cuda.CUDAGraph()
        if generator is not None:
            register = getattr(graph, "register_generator_state", None)
            if register is None:
                msg = (f"torch {torch.__version__} cannot register a custom generator with a "
                       "CUDA graph (needs torch >= 2.5)")
                raise RuntimeError(msg)
            register(generator)
        return graph

    def capture(self, graph: Any, fn: Callable[[], Any]) -> Any:
        with torch.cuda.graph(graph):
            return fn()

    def replay(self, graph: Any) -> None:
        graph.replay()


class GraphedDecision:
    """``run(z, mean0, eval_mode)`` → the decision's static output tensors, or None (with
    ``error``) if the graph for that ``eval_mode`` could not be captured."""

    def __init__(self, decide: DecideFn, latent_dim: int, horizon: int, action_dim: int,
                 device: torch.device, generator: torch.Generator | None, *,
                 backend: GraphBackend | None = None, warmup: int = 2) -> None:
        self.decide, self.generator, self.warmup = decide, generator, warmup
        self.backend: GraphBackend = backend if backend is not None else CudaBackend()
        self.static_z = torch.zeros(1, latent_dim, device=device)
        self.static_mean = torch.zeros(horizon, action_dim, device=device)
        self.graphs: dict[bool, tuple[Any, Any]] = {}
        self.error = ""

    def run(self, z: torch.Tensor, mean0: torch.Tensor, eval_mode: bool) -> Any:
        entry = self.graphs.get(eval_mode)
        if entry is None:
            try:
                entry = self._capture(eval_mode)
            except (RuntimeError, ValueError, TypeError) as err:   # CUDA errors are RuntimeErrors
                self.error = f"{type(err).__name__}: {err}"[:500]
                warnings.warn(f"CUDA graph capture failed, planning eagerly: {self.error}",
                              RuntimeWarning, stacklevel=3)
                return None
            self.graphs[eval_mode] = entry
        self.static_z.copy_(z)
        self.static_mean.copy_(mean0)
        graph, outputs = entry
        self.backend.replay(graph)
        return outputs

    def _capture(self, eval_mode: bool) -> tuple[Any, Any]:
        def body() -> Any:
            return self.decide(self.static_z, self.static_mean, eval_mode)

        state = self.generator.get_state() if self.generator is not None else None
        self.backend.warm_up(body, self.warmup)
        if state is not None:              # the warm-up's draws never happened, as far as
            self.generator.set_state(state)    # the decisions are concerned
        graph = self.backend.new_graph(self.generator)
        return graph, self.backend.capture(graph, body)


class EagerBackend:
    """A stand-in for tests and for reading the plumbing: 'capture' runs the function once and
    keeps it, leaving the generator as it found it (a capture records draws, it does not make
    them); 'replay' runs it again and writes the results into the captured outputs, as a
    replayed graph overwrites its static outputs."""

    def warm_up(self, fn: Callable[[], Any], times: int) -> None:
        for _ in range(times):
            fn()

    def new_graph(self, generator: torch.Generator | None) -> dict[str, Any]:
        return {"generator": generator}

    def capture(self, graph: dict[str, Any], fn: Callable[[], Any]) -> Any:
        generator = graph["generator"]
        state = generator.get_state() if generator is not None else None
        graph["fn"], graph["out"] = fn, fn()
        if state is not None:
            generator.set_state(state)
        return graph["out"]

    def replay(self, graph: dict[str, Any]) -> None:
        fresh = graph["fn"]()
        for f in dataclasses.fields(graph["out"]):
            getattr(graph["out"], f.name).copy_(getattr(fresh, f.name))
