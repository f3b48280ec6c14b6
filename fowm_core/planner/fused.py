"""Inference fast path for planning: the WorldModel's weights re-laid out as stacks
(docs/algorithm.md §4, §9).

Every head that reads the same (z, a) — dynamics, reward and the K Q heads — is one of B = 2 + K
stacked blocks (order: [dynamics, reward, q_0 .. q_{K-1}]). Three ways to run them, same math:

- C row kernels (``native.py``, the default when a C compiler is present): every block in turn runs
  matmul → fused epilogue → matmul → fused epilogue (the reward/Q 1-wide last layer a dot product
  inside it) on reused scratch buffers that stay in cache. The block loop itself runs in C, one
  call per imagined step, with torch's own BLAS ``sgemm_`` for the matmuls (``native.py`` hands it
  over and checks it; without it the stacked layout below is used); with ``per_block=False``
  (``planner.stacked_blocks``) one ``bmm`` per layer over all blocks with the same kernels, which
  has far fewer OpenMP barriers and so suffers much less when other processes share the cores.
- torch: one ``bmm`` per layer over all blocks and torch's elementwise ops (in place).
- ``compile_elementwise``: the torch path with bias, LayerNorm, affine and activation as one
  inductor kernel, Mish and Tanh through exact one-exp identities (``mish_exp``, ``tanh_exp``).

All agree with the model's layers within 2e-6 (tests). Nothing here is trained through: the stacks
are copies, rebuilt by ``refresh()`` whenever a model parameter changes (optimiser steps and
``load_state_dict`` bump the tensors' version counters; the learner bumps ``weights_version``).
WorldModel's methods stay the reference.

Symbols: z (N, L), a (N, A), M = mlp_dim, K = num_q, B = 2 + K.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from fowm_core.model.math import truncated_noise_sample
from fowm_core.model.world_model import WorldModel
from fowm_core.planner import native

DYN, REW, Q0 = 0, 1, 2


def mish_exp(x: torch.Tensor) -> torch.Tensor:
    """Mish via one exp: tanh(softplus(x)) = n / (n + 2) with n = eˣ(eˣ + 2), an exact identity.
    Past x = 20 the ratio is 1 in float32, and there the identity's eˣ² would overflow."""
    e = torch.exp(x)
    n = e * (e + 2.0)
    return torch.where(x > 20.0, x, x * n / (n + 2.0))


def tanh_exp(x: torch.Tensor) -> torch.Tensor:
    """tanh via one exp: 1 − 2 / (e²ˣ + 1), exact; saturates cleanly (e²ˣ = inf gives 1)."""
    return 1.0 - 2.0 / (torch.exp(2.0 * x) + 1.0)


def hidden1(h: torch.Tensor, bias: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
            n_mish: int) -> torch.Tensor:
    """First hidden layer of every block from its bias-free matmul h (B, N, M): add the bias (or the
    cached z-part, which includes it) → LayerNorm → per-block affine → Mish for blocks [:n_mish]
    (dynamics, reward), Tanh for the rest (Q heads). bias, w, b: (B, 1, M)."""
    out = F.layer_norm(h + bias, h.shape[-1:]) * w + b
    if n_mish == 0:
        return tanh_exp(out)
    if n_mish == out.shape[0]:
        return mish_exp(out)
    return torch.cat([mish_exp(out[:n_mish]), tanh_exp(out[n_mish:])])


def hidden2(h: torch.Tensor, bias: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
            n_mish: int) -> torch.Tensor:
    """Second hidden layer from its bias-free bmm h (B, N, M): blocks [:n_mish] take LayerNorm →
    affine (w, b: (n_mish, 1, M)) → Mish; the Q blocks after them take plain ELU."""
    h = h + bias
    if n_mish == 0:
        return F.elu(h)
    head = mish_exp(F.layer_norm(h[:n_mish], h.shape[-1:]) * w + b)
    if n_mish == h.shape[0]:
        return head
    return torch.cat([head, F.elu(h[n_mish:])])


def hidden1_eager(h: torch.Tensor, bias: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                  n_mish: int) -> torch.Tensor:
    """``hidden1`` with in-place ops (h is a scratch buffer): fewer passes when not compiled."""
    out = F.layer_norm(h.add_(bias), h.shape[-1:])
    out.mul_(w).add_(b)
    F.mish(out[:n_mish], inplace=True)
    out[n_mish:].tanh_()
    return out


def hidden2_eager(h: torch.Tensor, bias: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                  n_mish: int) -> torch.Tensor:
    h.add_(bias)
    if n_mish > 0:
        head = F.layer_norm(h[:n_mish], h.shape[-1:])
        h[:n_mish] = F.mish(head.mul_(w).add_(b), inplace=True)
    F.elu(h[n_mish:], inplace=True)
    return h


@dataclass
class StepOut:
    """One imagined step for N candidates: next latent, reward (N, 1), Q heads (K, N, 1) or None."""

    z: torch.Tensor
    r: torch.Tensor
    q: torch.Tensor | None


class FusedModel:
    """Stacked copies of a WorldModel's dynamics, reward and Q weights for no-grad planning."""

    def __init__(self, model: WorldModel, compile_elementwise: bool = False,
                 dynamic: bool = False, native_kernels: bool = True,
                 per_block: bool = True) -> None:
        self.model = model
        self.cfg = model.cfg
        self._fingerprint: tuple[tuple[int, int], ...] = ()
        self._act1: Callable[..., torch.Tensor] = hidden1_eager
        self._act2: Callable[..., torch.Tensor] = hidden2_eager
        self.compiled = False
        # The C row kernels (native.py) when they build here; else the torch path below.
        self.native = native.load() if native_kernels and not compile_elementwise else None
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None
        self.per_block = per_block
        # One block at a time needs the C loop (torch's sgemm handed to the kernels); without it
        # the kernels run stacked.
        self._in_c = per_block and self.native is not None and bool(self.native.blocks_in_c)
        if compile_elementwise:
            self._compile(dynamic)
        self.refresh()

    # -- weights ----------------------------------------------------------------------------
    def _param_fingerprint(self) -> tuple:
        return (getattr(self.model, "weights_version", 0),
                *((p.data_ptr(), p._version) for p in self.model.parameters()))

    def refresh(self) -> bool:
        """Rebuild the stacks if a model parameter changed since the last build; True if rebuilt."""
        fingerprint = self._param_fingerprint()
        if fingerprint == self._fingerprint:
            return False
        with torch.no_grad():
            self._build()
        self._fingerprint = self._param_fingerprint()
        return True

    def _build(self) -> None:
        m = self.model
        L, K, M = self.cfg.latent_dim, self.cfg.num_q, self.cfg.mlp_dim
        dyn, rew, qs = m._dynamics[0], m._reward, m._qs
        # Layer 1: (B, L+A, M), input-major so x @ w1[b] is block b's pre-activation.
        q_w1 = qs.w1.detach().view(L + self.cfg.action_dim, K, M).permute(1, 0, 2)
        w1 = torch.cat([dyn[0].weight.T[None], rew[0].weight.T[None], q_w1]).contiguous()
        self.w1 = w1
        self.w1z, self.w1a = w1[:, :L].contiguous(), w1[:, L:].contiguous()
        self.b1 = torch.cat([dyn[0].bias[None], rew[0].bias[None], qs.b1.view(K, M)])[:, None]
        self.ln1_w = torch.cat([dyn[1].weight[None], rew[1].weight[None], qs.ln_weight])[:, None]
        self.ln1_b = torch.cat([dyn[1].bias[None], rew[1].bias[None], qs.ln_bias])[:, None]
        # Layer 2: (B, M, M) and its LayerNorm (dynamics and reward only; Q heads go to ELU).
        self.w2 = torch.cat([dyn[3].weight.T[None], rew[3].weight.T[None], qs.w2]).contiguous()
        self.b2 = torch.cat([dyn[3].bias[None, None], rew[3].bias[None, None], qs.b2])
        self.ln2_w = torch.stack([dyn[4].weight, rew[4].weight])[:, None]
        self.ln2_b = torch.stack([dyn[4].bias, rew[4].bias])[:, None]
        # Layer 3: dynamics (M → L, then LN + Sigmoid); reward and Q heads stacked (1 + K, M, 1).
        self.w3d, self.b3d = dyn[6].weight.T.contiguous(), dyn[6].bias.clone()
        bound = m._dynamics[1].norm
        self.lnz_w, self.lnz_b = bound.weight.clone(), bound.bias.clone()
        self.w3rq = torch.cat([rew[6].weight.T[None], qs.w3]).contiguous()
        self.b3rq = torch.cat([rew[6].bias.view(1, 1, 1), qs.b3])
        # π: Linear → LN → Mish → Linear → LN → Mish → Linear, kept as (1, ·, ·) stacks.
        pi = m._pi
        self.pi_w = [pi[i].weight.T.contiguous() for i in (0, 3, 6)]
        self.pi_b = [pi[i].bias.detach().clone() for i in (0, 3, 6)]
        self.pi_ln = [(pi[i].weight.detach().clone(), pi[i].bias.detach().clone()) for i in (1, 4)]
        for name in ("b1", "ln1_w", "ln1_b", "b2", "ln2_w", "ln2_b", "w3rq", "b3rq"):
            setattr(self, name, getattr(self, name).detach().contiguous())

    def _compile(self, dynamic: bool) -> None:
        """Inductor (C++ backend) fuses bias, LayerNorm, affine and the activation into one loop
        per row. Kernels compile lazily on the first call of each shape (the planner warms them
        up); ``use_eager`` is the fallback. dynamic=False specialises each batch size, the faster
        choice for the planner's handful of shapes (docs/platform.md §15)."""
        self._act1 = torch.compile(hidden1, dynamic=dynamic, fullgraph=True)
        self._act2 = torch.compile(hidden2, dynamic=dynamic, fullgraph=True)
        self.compiled = True

    def use_eager(self) -> None:
        self._act1, self._act2, self.compiled = hidden1_eager, hidden2_eager, False

    # -- blocks -----------------------------------------------------------------------------
    def z_part(self, z: torch.Tensor, blocks: int | None = None) -> torch.Tensor:
        """z @ W1z + b1 for one latent (1, L): every candidate at t = 0 shares it (B, 1, M)."""
        nb = self.w1z.shape[0] if blocks is None else blocks
        return torch.baddbmm(self.b1[:nb], z.expand(nb, *z.shape), self.w1z[:nb])

    def _hidden(self, h1: torch.Tensor, stack: tuple[torch.Tensor, ...], bias1: torch.Tensor,
                n_mish: int) -> torch.Tensor:
        """Both hidden layers of the stacked blocks from the bias-free first matmul h1 (B, N, M)."""
        g1, c1, w2, b2 = stack
        h = self._act1(h1, bias1, g1, c1, n_mish)
        return self._act2(torch.bmm(h, w2), b2, self.ln2_w[:n_mish], self.ln2_b[:n_mish], n_mish)

    def step(self, z: torch.Tensor, a: torch.Tensor, *, with_q: bool,
             z_part: torch.Tensor | None = None) -> StepOut:
        """Dynamics, reward and (if with_q) all K Q heads at (z, a) in one pass of stacked layers.
        z_part: ``z_part(z0)`` when every row shares z0: only the action columns are multiplied."""
        nb = self.w1z.shape[0] if with_q else 2
        n = a.shape[0]
        if self.native is not None:
            step = self._step_native if self._in_c else self._step_stacked_native
            if z_part is None:
                return step(torch.cat([z, a], dim=-1), self.w1, self.b1, nb, with_q)
            return step(a.contiguous(), self.w1a, z_part, nb, with_q)
        if z_part is None:
            x = torch.cat([z, a], dim=-1)
            h1 = torch.bmm(x.expand(nb, *x.shape), self.w1[:nb])
            bias1 = self.b1[:nb]
        else:
            h1 = torch.bmm(a.expand(nb, n, a.shape[-1]), self.w1a[:nb])
            bias1 = z_part[:nb]
        stack = (self.ln1_w[:nb], self.ln1_b[:nb], self.w2[:nb], self.b2[:nb])
        h = self._hidden(h1, stack, bias1, 2)
        z_next = torch.addmm(self.b3d, h[DYN], self.w3d)
        z_next = torch.sigmoid(F.layer_norm(z_next, z_next.shape[-1:], self.lnz_w, self.lnz_b))
        rq = torch.baddbmm(self.b3rq[: nb - 1], h[REW:nb], self.w3rq[: nb - 1])
        return StepOut(z_next, rq[0], rq[1:] if with_q else None)

    # -- the C-kernel path (native.py): one block at a time, the loop in C ------------------------
    # Each block runs matmul → fused epilogue → matmul → fused epilogue on scratch buffers of
    # N × M floats (1 MiB at the paper sizes) that stay in cache, instead of bmm'ing all B blocks
    # through 7 MiB tensors: faster on idle cores, far slower on shared ones (stacked_blocks in
    # PlannerConfig; docs/results.md "Speed"). The buffers make a FusedModel single-threaded: one
    # planner, one thread (as the planner node uses it).
    def _scratch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._buffers is None or self._buffers[0].shape[0] < n:
            m = self.cfg.mlp_dim
            self._buffers = (torch.empty(n, m), torch.empty(n, m), torch.empty(n, m))
        return self._buffers[0][:n], self._buffers[1][:n], self._buffers[2][:n]

    def _blocks_in_c(self, x: torch.Tensor, w1: torch.Tensor, bias1: torch.Tensor,
                     blocks: list[int], out: torch.Tensor) -> torch.Tensor:
        """Every listed block in one C call (``fowm_blocks``: torch's sgemm and the row kernels);
        returns the dynamics block's hidden output (valid if block DYN was listed)."""
        h1, h2, dyn = self._scratch(x.shape[0])
        n, k, m = x.shape[0], x.shape[1], self.cfg.mlp_dim
        ids = (ctypes.c_long * len(blocks))(*blocks)
        self.native.fowm_blocks(
            x.data_ptr(), n, k, m, ids, len(blocks), w1.data_ptr(), bias1.data_ptr(),
            self.ln1_w.data_ptr(), self.ln1_b.data_ptr(), self.w2.data_ptr(), self.b2.data_ptr(),
            self.ln2_w.data_ptr(), self.ln2_b.data_ptr(), self.w3rq.data_ptr(),
            self.b3rq.data_ptr(), h1.data_ptr(), h2.data_ptr(), dyn.data_ptr(), out.data_ptr(),
            self._threads())
        return dyn

    @staticmethod
    def _threads() -> int:
        return torch.get_num_threads()

    def _step_native(self, x: torch.Tensor, w1: torch.Tensor, bias1: torch.Tensor, nb: int,
                     with_q: bool) -> StepOut:
        """``step`` through the C row kernels. x is (z, a) with w1 = ``w1`` and the biases ``b1``,
        or the actions alone with w1 = ``w1a`` and the shared z-part as the biases."""
        rq = torch.empty(nb - 1, x.shape[0], 1)
        h_dyn = self._blocks_in_c(x.contiguous(), w1, bias1, list(range(nb)), rq)
        z_next = torch.addmm(self.b3d, h_dyn, self.w3d)
        z_next = torch.sigmoid(F.layer_norm(z_next, z_next.shape[-1:], self.lnz_w, self.lnz_b))
        return StepOut(z_next, rq[0], rq[1:] if with_q else None)

    def _step_stacked_native(self, x: torch.Tensor, w1: torch.Tensor, bias1: torch.Tensor,
                             nb: int, with_q: bool) -> StepOut:
        """``step`` with one bmm per layer over the nb stacked blocks and the row kernels."""
        lib = self.native
        h1 = torch.bmm(x.expand(nb, *x.shape), w1[:nb])
        native.ln_act_(lib, h1, bias1[:nb], self.ln1_w[:nb], self.ln1_b[:nb], 2)
        h2 = torch.bmm(h1, self.w2[:nb])
        h_dyn = native.ln_act_(lib, h2[:1], self.b2[:1], self.ln2_w[:1], self.ln2_b[:1], 1)[0]
        z_next = torch.addmm(self.b3d, h_dyn, self.w3d)
        z_next = torch.sigmoid(F.layer_norm(z_next, z_next.shape[-1:], self.lnz_w, self.lnz_b))
        rq = native.head_out(lib, h2[1:nb], self.b2[1:nb], self.ln2_w[1:], self.ln2_b[1:], 1,
                             self.w3rq[: nb - 1], self.b3rq[: nb - 1])
        return StepOut(z_next, rq[0], rq[1:] if with_q else None)

    def pi_mean(self, z: torch.Tensor) -> torch.Tensor:
        """tanh(π(z)) through the row kernels (the model's own π without them)."""
        if self.native is None:
            return self.model.pi_mean(z)
        h = z
        for layer in range(2):
            g, c = self.pi_ln[layer]
            h = native.ln_act_(self.native, (h @ self.pi_w[layer])[None], self.pi_b[layer][None],
                               g[None], c[None], 1)[0]
        return torch.tanh(torch.addmm(self.pi_b[2], h, self.pi_w[2]))

    def pi(self, z: torch.Tensor, std: float = 0.0,
           generator: torch.Generator | None = None) -> torch.Tensor:
        """The policy prior with the model's truncated noise (same draws as ``WorldModel.pi``)."""
        return truncated_noise_sample(self.pi_mean(z), std, generator=generator)

    def _q_stack(self, heads: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """Layer stacks of the Q blocks: all K as views, or a gathered copy of the chosen heads."""
        full = (self.w1[Q0:], self.b1[Q0:], self.ln1_w[Q0:], self.ln1_b[Q0:], self.w2[Q0:],
                self.b2[Q0:], self.w3rq[1:], self.b3rq[1:])
        if heads is None:
            return full
        return tuple(t.index_select(0, heads) for t in full)

    def q(self, z: torch.Tensor, a: torch.Tensor,
          heads: torch.Tensor | None = None) -> torch.Tensor:
        """Q heads at (z, a): all K (K, N, 1), or only ``heads`` (LongTensor of head indices)."""
        x = torch.cat([z, a], dim=-1)
        if self.native is not None and not self._in_c:
            w1, b1, g1, c1, w2, b2, w3, b3 = self._q_stack(heads)
            h1 = native.ln_act_(self.native, torch.bmm(x.expand(w1.shape[0], *x.shape), w1),
                                b1, g1, c1, 0)
            return native.head_out(self.native, torch.bmm(h1, w2), b2, b2, b2, 0, w3, b3)
        if self.native is not None:
            chosen = range(self.cfg.num_q) if heads is None else heads.tolist()
            out = torch.empty(len(chosen), x.shape[0], 1)
            self._blocks_in_c(x, self.w1, self.b1, [Q0 + k for k in chosen], out)
            return out
        w1, b1, g1, c1, w2, b2, w3, b3 = self._q_stack(heads)
        h1 = torch.bmm(x.expand(w1.shape[0], *x.shape), w1)
        h = self._hidden(h1, (g1, c1, w2, b2), b1, 0)
        return torch.baddbmm(b3, h, w3)
