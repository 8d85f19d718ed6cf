"""Read the memory once: a query-independent reader run at commit, and a light answer step per query.

The query heads (export/model/heads.py) re-encode the whole memory for every query. Here the memory
is read once per commit into per-token *facts* that do not depend on any query:

- ``ident`` (m, E): an identity embedding, unit length, matchable against a crop's embedding;
- ``act_logits`` (m, C): which activity the object under the token is undergoing;
- ``event_logit`` (m,): "an event is in progress here";
- ``boxes`` (m, 4): the box (x1, y1, x2, y2 in [0, 1]) of the object under the token;
- ``span`` (m, 2): seconds from the token back to its event's start and on to its end.

The facts are committed state like the memory itself, constant in size (lvm-tiny: 392 x 47 floats).
An answer step then costs O(m·E) per query: a match of the query crop's embedding against ``ident``,
window masks, and pooling. Everything in ``forward`` is tensor ops of static shape (argmax, gather,
masked min / max, a fixed number of ranked answers), so both graphs export to ONNX as they are.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from edge_runtime.config import ModelConfig
from export.model.encodings import spatial_encoding
from export.model.layers import MASK_NEG, EncoderLayer, key_bias


@dataclass(frozen=True)
class ReaderConfig:
    d_model: int = 64
    layers: int = 2
    heads: int = 4
    ff_mult: int = 2
    embed: int = 32           # E: identity embedding width
    dropout: float = 0.1
    time_scale_s: float = 20.0  # distance unit of the attention's time locality
    span_scale_s: float = 10.0  # event offsets are predicted in this unit
    ranked: int = 3           # answers per object / time query (R@3x)
    keyframes: int = 16       # boxes per object answer, interpolated to 5 fps outside the graph
    box_sigma_s: float = 3.0  # how far in time a token's box speaks for a keyframe
    group_slack_s: float = 4.0  # a token joins an answer's group within its anchor's span +- this
    # each SVD basis row is read with the sign that makes its cubed entries sum positive: LAPACK picks
    # a row's sign arbitrarily, and ONNX Runtime's tokens (device) and PyTorch's (training) can land
    # on opposite signs of the same summary
    svd_sign: bool = True
    # each token also reads how its patch changed since the frame before and until the frame after, where
    # those tokens are among the ones read (a timeline row's whole frames; runs of one patch in the memory):
    # hold and inspect differ mostly by motion (a held item stays still, an inspected one turns)
    motion: bool = True
    # an object or time answer's evidence is the mean support of the window's best this-many tokens: one
    # token alone is often a stray frame (an absent activity's best token scored as high as a present
    # one's), while a real event holds several (docs/accuracy.md#not-seen)
    evidence_top: int = 4

    def __post_init__(self) -> None:
        if not (isinstance(self.evidence_top, int) and self.evidence_top >= 1):
            raise ValueError(f"reader config: evidence_top must be a whole number of tokens >= 1, got {self.evidence_top!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> "ReaderConfig":
        """A reader file's config; files written before ``svd_sign`` existed read the basis as given,
        before ``motion`` without it, and before ``evidence_top`` with one token's evidence."""
        return cls(**{"svd_sign": False, "motion": False, "evidence_top": 1, **saved})


class MemoryReader(nn.Module):
    """Committed memory (+ online-SVD state) -> per-token facts. One call per commit."""

    def __init__(self, cfg: ModelConfig, rc: ReaderConfig = ReaderConfig()) -> None:
        super().__init__()
        d, D = cfg.backbone.dim, rc.d_model
        self.rc, self.D, self.C = rc, D, cfg.heads.num_activities
        self.fps, self.max_video_s, self.grid = cfg.stream.fps, cfg.stream.max_video_s, cfg.backbone.grid
        self.mem_in = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D))
        self.svd_in = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D))
        self.svd_rank = nn.Embedding(cfg.svd.n_components, D)
        self.kind = nn.Embedding(2, D)  # 0 memory token, 1 SVD token
        if rc.motion:
            # no LayerNorm on the differences themselves: their size (still or turning) is the signal
            self.motion_norm = nn.LayerNorm(d)
            self.motion_in = nn.Linear(2 * d + 2, D)
        self.enc = nn.ModuleList(EncoderLayer(D, rc.heads, rc.ff_mult, rc.dropout) for _ in range(rc.layers))
        # Activities are trajectories (shelf -> scanner -> bag over seconds): a token learns its activity
        # from the tokens near it in time, so attention between memory tokens is biased toward near
        # times (per layer and head, slopes from global to local), as the heads' decoder is.
        init = torch.logspace(-2.0, 0.5, rc.heads)
        self.time_slope = nn.Parameter(torch.log(torch.expm1(init)).repeat(rc.layers, 1))
        self.norm = nn.LayerNorm(D)
        # identity reads the token's own appearance only: with context (or time) in it, 4 training videos
        # were memorised (train top-1 0.95, held-out 0.05 = chance); appearance alone also trains on every
        # frame token, not just the memory's
        self.ident = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * D), nn.GELU(), nn.Linear(2 * D, rc.embed))
        self.act = nn.Linear(D, self.C)
        nn.init.constant_(self.act.bias, -3.0)
        self.event = nn.Linear(D, 1)
        nn.init.constant_(self.event.bias, -2.0)
        self.box = nn.Linear(D, 4)
        self.span = nn.Linear(D, 2)
        # the crop: the object alone and large; pooled by learned attention over its patches
        self.crop_in = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D), nn.GELU(), nn.Linear(D, D))
        self.crop_pool = nn.Linear(D, 1)
        self.crop_out = nn.Linear(D, rc.embed)

    def forward(self, mem, mem_t, mem_p, mem_valid, svd_basis, svd_sv):
        """mem (B,m,d); mem_t, mem_valid (B,m) float; mem_p (B,m) int64; svd_basis (B,r,d); svd_sv (B,r).
        -> ident (B,m,E) unit rows, act_logits (B,m,C), event_logit (B,m), boxes (B,m,4), span (B,m,2) s."""
        D, rc = self.D, self.rc
        coef = mem @ svd_basis.transpose(1, 2)
        content = self.mem_in(mem + coef @ svd_basis)  # MeMSVD read: h + (h Uᵀ) U
        # no absolute time: a fact does not depend on when it happened (absolute time let the reader
        # memorise its training videos); time enters only as the attention's relative-time bias
        h = content + spatial_encoding(mem_p, D, self.grid) + self.kind.weight[0]
        if rc.motion:
            h = h + self.motion_in(self.motion(mem, mem_t, mem_p, mem_valid))
        sv = svd_sv / (svd_sv[:, :1] + 1e-6)
        if rc.svd_sign:
            sv = sv * torch.where((svd_basis ** 3).sum(-1) >= 0, 1.0, -1.0)
        svd_tok = self.svd_in(svd_basis * sv[..., None]) + self.svd_rank.weight + self.kind.weight[1]
        x = torch.cat([h, svd_tok], dim=1)
        m = h.shape[1]
        keep = torch.cat([mem_valid, (svd_sv > 0).to(torch.float32)], dim=1)
        bias = key_bias(keep)  # (B,1,1,N)
        t_all = torch.cat([mem_t, torch.zeros_like(svd_sv)], dim=1)
        is_mem = torch.cat([torch.ones_like(mem_t), torch.zeros_like(svd_sv)], dim=1)
        pair = is_mem[:, :, None] * is_mem[:, None, :]
        dist = (t_all[:, :, None] - t_all[:, None, :]).abs() * pair / rc.time_scale_s  # (B,N,N)
        slopes = nn.functional.softplus(self.time_slope)
        for li, layer in enumerate(self.enc):
            x = layer(x, bias - slopes[li][None, :, None, None] * dist[:, None])
        x = self.norm(x[:, :m])
        ident = self.token_ident(mem)
        o = self.box(x)
        row = torch.div(mem_p, self.grid, rounding_mode="floor").to(torch.float32)
        col = mem_p.to(torch.float32) - row * self.grid
        # a box near its own patch: centre = patch centre + a bounded offset, size free
        cx = (col + 0.5) / self.grid + torch.tanh(o[..., 0]) * (2.0 / self.grid)
        cy = (row + 0.5) / self.grid + torch.tanh(o[..., 1]) * (2.0 / self.grid)
        w, hh = torch.sigmoid(o[..., 2]), torch.sigmoid(o[..., 3])
        boxes = torch.stack([cx - w / 2, cy - hh / 2, cx + w / 2, cy + hh / 2], dim=-1).clamp(0.0, 1.0)
        span = nn.functional.softplus(self.span(x)) * rc.span_scale_s
        return ident, self.act(x), self.event(x).squeeze(-1), boxes, span

    def motion(self, mem, mem_t, mem_p, mem_valid):
        """(B,m,2d+2): each token minus the same patch one frame before, and minus it one frame after
        (normalised tokens), with a flag each for whether that neighbour is among the tokens read. Static
        shapes: one (m, m) match per direction, so the graph exports as it is."""
        step = 1.0 / self.fps
        n = self.motion_norm(mem)
        same = (mem_p[:, :, None] == mem_p[:, None, :]).to(torch.float32) * mem_valid[:, :, None] * mem_valid[:, None, :]
        dt = mem_t[:, None, :] - mem_t[:, :, None]  # (B,i,j): t_j - t_i
        out = []
        for sign in (-1.0, 1.0):
            match = same * ((dt - sign * step).abs() < 0.25 * step).to(torch.float32)
            count = match.sum(-1, keepdim=True)
            has = (count > 0).to(torch.float32)
            other = (match @ n) / count.clamp(min=1.0)
            out.append((n - other) * has)
            out.append(has)
        d_prev, has_prev, d_next, has_next = out
        return torch.cat([d_prev, d_next, has_prev, has_next], dim=-1)

    def token_ident(self, tokens: torch.Tensor) -> torch.Tensor:
        """Backbone tokens (..., d) -> (..., E) unit identity embeddings."""
        return nn.functional.normalize(self.ident(tokens), dim=-1)

    def embed_crop(self, q_object: torch.Tensor) -> torch.Tensor:
        """Crop tokens (Q, P, d) -> (Q, E) unit embedding. Also what a catalog product is stored as."""
        h = self.crop_in(q_object)
        a = self.crop_pool(h).softmax(dim=1)
        return nn.functional.normalize(self.crop_out((a * h).sum(dim=1)), dim=-1)


# support at or below this decides nothing reproducibly: a product of sigmoids deep in their tails, where
# float32 implementations differ by far more than rounding (0.5 % at 2e-12); such an answer is "not seen"
SUPPORT_FLOOR = 1e-6


class AnswerStep(nn.Module):
    """Facts of one memory + Q queries -> answers. O(m·E + m·C) per query; no re-encoding.

    activity (object + window): per class, the best token's p(shows the object) x p(activity);
    object (activity + window): support = p(activity) x p(event in progress); anchor = best token, its group = tokens of the same
      identity and activity within the anchor's predicted event span; extent = the group's span
      estimates; boxes at ``keyframes`` times = the group's boxes weighted by nearness in time;
    time (activity + object + window): as object, weighted also by identity; the extent is the answer.
    The next ranked answers take the next anchor with the previous groups' spans masked out.
    ``evidence`` (Q,) in [0, 1]: for activity queries the best identity match in the window, otherwise the mean
    support of the window's ``evidence_top`` best tokens; calibration lives outside (fitted
    on training looks) so that "not seen" is a threshold on a probability.
    """

    def __init__(self, rc: ReaderConfig = ReaderConfig(), window_tol_s: float = 0.5) -> None:
        super().__init__()
        self.rc = rc
        self.window_tol = window_tol_s
        # identity match: logit = scale * cos + bias (trained with the reader's identity loss)
        self.id_scale = nn.Parameter(torch.tensor(10.0))
        self.id_bias = nn.Parameter(torch.tensor(-5.0))

    def match_logits(self, ident: torch.Tensor, q_embed: torch.Tensor) -> torch.Tensor:
        """ident (m, E) or (B, m, E); q_embed (Q, E) or (B, K, E) -> (Q, m) or (B, m, K)."""
        if ident.ndim == 2:
            return self.id_scale * (q_embed @ ident.T) + self.id_bias
        return self.id_scale * (ident @ q_embed.transpose(1, 2)) + self.id_bias

    def forward(self, ident, act_logits, event_logit, boxes, span, mem_t, mem_valid,
                q_type, q_activity, q_embed, q_window):
        """Facts of one memory (m, ...) and mem_t, mem_valid (m,); q_type, q_activity (Q,) int64,
        q_embed (Q, E), q_window (Q, 2). -> activity_scores (Q, C), intervals (Q, K, 3) [start, end,
        support], keyboxes (Q, K, S, 4) at linspace(start, end, S), evidence (Q,)."""
        return self._answer(ident, act_logits, event_logit, boxes, span, mem_t, mem_valid,
                            q_type, q_activity, q_embed, q_window)[:4]

    def decided(self, *facts_and_queries, w_tol: float = 1e-4,
                t_tol_s: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor]:
        """(decided, supported), each (Q, K) bool, from ``forward``'s arguments. ``decided`` is False where
        the k-th ranked answer, or one before it, rests on a choice within float rounding of going the
        other way: two anchors whose support differs by less than ``w_tol`` of the best, a token that
        far from the group's support cut, or a token within ``t_tol_s`` of a span's edge; or where its
        support is at most ``SUPPORT_FLOOR`` (``supported`` False: nothing was found, and sigmoids
        that deep in their tails differ between float32 implementations by far more than ``w_tol``).
        Two correct implementations (PyTorch, ONNX Runtime) may choose differently there, and the
        answer moves by a whole token: export parity compares the ranked answers that are decided."""
        return self._answer(*facts_and_queries, tol=(w_tol, t_tol_s))[4]

    def _answer(self, ident, act_logits, event_logit, boxes, span, mem_t, mem_valid,
                q_type, q_activity, q_embed, q_window, tol: tuple[float, float] | None = None):
        rc = self.rc
        Q, m = q_type.shape[0], mem_t.shape[0]
        p_id = torch.sigmoid(self.match_logits(ident, q_embed))  # (Q, m)
        p_act = torch.sigmoid(act_logits)  # (m, C)
        s, e = q_window[:, 0:1], q_window[:, 1:2]
        in_win = ((mem_t >= s - self.window_tol) & (mem_t <= e + self.window_tol)).to(torch.float32) * mem_valid
        # activity queries
        act_scores = (in_win[:, :, None] * p_id[:, :, None] * p_act[None]).max(dim=1).values  # (Q, C)
        # object and time queries: support of each token for the asked activity, while an event is in
        # progress there (p(activity) alone stays ~0.3 on tokens of no event, enough to outvote "not seen")
        pa = torch.gather(p_act.T, 0, q_activity.clamp(0, p_act.shape[1] - 1)[:, None].expand(-1, m))  # (Q, m)
        pa = pa * torch.sigmoid(event_logit)[None]
        is_time = (q_type == 2).to(torch.float32)[:, None]
        w = in_win * pa * (is_time * p_id + (1.0 - is_time))
        # zeros beyond the rows read: a feed of only the window's rows scores as the whole memory does
        k = rc.evidence_top
        support = torch.cat([w, w.new_zeros(Q, k)], dim=1).topk(k, dim=1).values.mean(dim=1)
        t0 = mem_t[None].expand(Q, -1)
        start_est = t0 - span[:, 0][None]
        end_est = t0 + span[:, 1][None]
        intervals, keyboxes = [], []
        key_t = torch.linspace(0.0, 1.0, rc.keyframes)
        decided, supported, clear = [], [], torch.ones(Q, dtype=torch.bool)
        for _ in range(rc.ranked):
            best = w.argmax(dim=1, keepdim=True)  # (Q, 1)
            w_best = torch.gather(w, 1, best)
            a_id = ident[best.squeeze(1)]  # (Q, E)
            same = torch.sigmoid(self.match_logits(ident, a_id))  # (Q, m): same identity as the anchor
            a_s, a_e = torch.gather(start_est, 1, best), torch.gather(end_est, 1, best)
            near = ((t0 >= a_s - rc.group_slack_s) & (t0 <= a_e + rc.group_slack_s)).to(torch.float32)
            if tol is not None:
                clear = clear & self._clear(w, w_best, t0, (a_s - rc.group_slack_s, a_e + rc.group_slack_s),
                                            (ident, start_est, end_est), *tol)
                weak = (w_best[:, 0] > 0) & (w_best[:, 0] <= SUPPORT_FLOOR)
                supported.append(~weak)
            g = w * same * near * (w >= 0.25 * w_best).to(torch.float32)
            gn = g / g.sum(dim=1, keepdim=True).clamp_min(1e-9)
            st = ((gn * start_est).sum(1, keepdim=True)).clamp(min=s, max=e)
            en = ((gn * end_est).sum(1, keepdim=True)).clamp(min=s, max=e)
            en = torch.maximum(en, st + 1.0 / 5.0)
            intervals.append(torch.cat([st, en, w_best], dim=1))
            kt = st + (en - st) * key_t[None]  # (Q, S)
            near_k = -((kt[:, :, None] - t0[:, None, :]) ** 2) / (2 * rc.box_sigma_s ** 2)
            logit = near_k + torch.log(g.clamp_min(1e-9))[:, None, :] + (1.0 - (g > 0).to(torch.float32))[:, None, :] * MASK_NEG
            kb = logit.softmax(dim=-1) @ boxes  # (Q, S, 4)
            keyboxes.append(kb)
            # the next answer: another event, so every token inside this one's span is set aside
            taken = ((t0 >= st - rc.group_slack_s) & (t0 <= en + rc.group_slack_s)).to(torch.float32) * same
            if tol is not None:
                decided.append(clear & ~weak)
                # the next answers depend on which tokens this one set aside
                edge = torch.minimum((t0 - (st - rc.group_slack_s)).abs(), (t0 - (en + rc.group_slack_s)).abs())
                clear = clear & ~((edge <= tol[1]) & (w > SUPPORT_FLOOR)).any(dim=1)
            w = w * (1.0 - taken.clamp(0.0, 1.0))
        intervals = torch.stack(intervals, dim=1)
        keyboxes = torch.stack(keyboxes, dim=1)
        is_act = (q_type == 0).to(torch.float32)
        # an activity query is "not seen" when its product is nowhere in the window: its evidence is the
        # best identity match there, whatever the activity
        present = (in_win * p_id).max(dim=1).values
        evidence = is_act * present + (1.0 - is_act) * support
        return (act_scores, intervals, keyboxes, evidence,
                (torch.stack(decided, dim=1), torch.stack(supported, dim=1)) if tol else None)

    @staticmethod
    def _clear(w, w_best, t0, edges, anchors, w_tol: float, t_tol_s: float) -> torch.Tensor:
        """(Q,) bool: this rank's anchor and group are chosen with room to spare (see ``decided``).
        ``anchors``: what an anchor brings to its answer (identity (m, E), start and end (Q, m))."""
        scale = w_best.clamp_min(1e-12)
        top2, idx = w.topk(min(2, w.shape[1]), dim=1)
        gap = top2[:, 0] - top2[:, -1] if w.shape[1] > 1 else top2[:, 0]
        ident, start, end = anchors
        # the same token twice (a memory may hold a copy) answers alike whichever is taken
        alike = (ident[idx[:, 0]] == ident[idx[:, -1]]).all(dim=1) & (start.gather(1, idx[:, :1]) == start.gather(
            1, idx[:, -1:]))[:, 0] & (end.gather(1, idx[:, :1]) == end.gather(1, idx[:, -1:]))[:, 0]
        # no support anywhere (nothing in the window) answers the same whichever token is "best"
        anchor = (gap > w_tol * scale[:, 0]) | (top2[:, 0] <= 0) | alike
        rel = w / scale
        lo, hi = edges
        at_edge = torch.minimum((t0 - lo).abs(), (t0 - hi).abs()) <= t_tol_s
        inside = (t0 >= lo - t_tol_s) & (t0 <= hi + t_tol_s)
        # a token at the support cut (0.25 of the best) inside the span, or a member at the span's edge
        cut = ((rel - 0.25).abs() <= w_tol) & inside
        edge = at_edge & (rel >= 0.25 - w_tol)
        return anchor & ~(cut | edge).any(dim=1)


READER_FORMAT = "lvm-reader/1"


def save_reader(path, reader: MemoryReader, answer: AnswerStep, meta: dict) -> None:
    """safetensors, never pickle: the reader's and answer step's weights, JSON metadata (its reader
    config, the model config digest it reads, calibration, class prior, how it was trained)."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from edge_runtime.atomic_write import atomic_writer

    state = {f"reader.{k}": v.detach().contiguous() for k, v in reader.state_dict().items()}
    state.update({f"answer.{k}": v.detach().contiguous() for k, v in answer.state_dict().items()})
    md = {"format": READER_FORMAT, "reader_config": json.dumps(reader.rc.to_dict())}
    md.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()})
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(Path(path)) as tmp:
        save_file(state, str(tmp), metadata=md)


def read_reader_file(path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a reader file; ValueError (one line) for a missing or damaged file, or
    one that is not a reader."""
    from export.model.checkpoint import read_format_file

    return read_format_file(path, READER_FORMAT, "a reader file")


def load_reader(path, cfg: ModelConfig) -> tuple[MemoryReader, AnswerStep, dict]:
    """-> (reader, answer step, metadata with JSON values decoded). ValueError (one line) for a file
    that is not a reader or was trained for another model config."""
    import json

    md, state = read_reader_file(path)
    meta = {}
    for k, v in md.items():
        try:
            meta[k] = json.loads(v)
        except ValueError:
            meta[k] = v
    if meta.get("config_sha256") not in (None, cfg.digest()):
        raise ValueError(f"{path}: reader trained for model config {meta['config_sha256'][:12]}, "
                         f"this model's is {cfg.digest()[:12]}")
    rc = ReaderConfig.from_dict(meta["reader_config"])
    reader, answer = MemoryReader(cfg, rc), AnswerStep(rc, 0.5 / cfg.stream.fps)
    reader.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("reader.")})
    answer.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("answer.")})
    return reader.eval(), answer.eval(), meta
