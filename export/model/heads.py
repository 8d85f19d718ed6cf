"""Query heads (LVM-Net §4): answer activity / object / time queries from the memory alone.

One graph answers a batch of Q queries of any mix of types against one memory. Per query, the
encoder reads the memory tokens (MeMSVD-projected, gated by the object crop's tokens of the same
patch index, marked with their learned identity match to the whole crop, which also biases every
attention toward them, and masked to the asked window), the crop
tokens, one query token and the online-SVD tokens; the decoder's queries are temporal encodings of
L timestamps spread over the window, biased toward memory tokens near their own time. Activities
are scored per decoder slot and the best slot counts (did it happen at some time in the window),
plus the best memory token of the queried object (did a token of it show that activity).

Query types: 0 = activity (object + window -> activities), 1 = object (activity + window -> boxes),
2 = time (activity + object + window -> start/end).
"""
from __future__ import annotations

import torch
from torch import nn

from edge_runtime.config import ModelConfig
from edge_runtime.query.types import BY_NAME, QUERY_TYPES
from export.model.encodings import spatial_encoding, temporal_encoding
from export.model.layers import MASK_NEG, DecoderLayer, EncoderLayer, key_bias

# which inputs each query type is given, by type id: (has_activity, has_object)
_GIVEN = [[float(t.takes_activity), float(t.takes_object)] for t in sorted(QUERY_TYPES, key=lambda t: t.id)]


class QueryHeads(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        hc, d = cfg.heads, cfg.backbone.dim
        self.D = D = hc.d_model
        self.fps, self.max_video_s, self.grid = cfg.stream.fps, cfg.stream.max_video_s, cfg.backbone.grid
        self.P = cfg.backbone.tokens_per_frame
        self.C = hc.num_activities
        self.window_tol = 0.5 / cfg.stream.fps
        self.mem_in = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D))
        self.obj_in = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D))
        # The crop's tokens multiply the memory tokens of the same patch index (LVM-Net), as
        # 1 + gate with the gate starting at 0: a random multiplicative gate at initialisation
        # scrambled the memory of every query that gives an object.
        self.obj_gate = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D))
        nn.init.zeros_(self.obj_gate[1].weight)
        nn.init.zeros_(self.obj_gate[1].bias)
        # ... and, since the object appears at any patch of the scene, a position-free identity match
        # of each memory token against the whole crop. The crop shows the object alone and large, the
        # scene a few pixels of it inside one patch: raw similarity picked the right product 5 % of the
        # time, so the match is learned, and trained directly on which tokens show the queried
        # instance (identity loss, export/train/heads_stage.py). Its probability is written into the token
        # along a learned direction, and its log-probability biases every attention over memory (per
        # layer and head, learned weight), so the heads read the queried object's tokens among others.
        self.id_mem = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D))
        self.id_obj = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D))
        self.id_offset = nn.Parameter(torch.tensor(-2.0))
        self.match_dir = nn.Parameter(torch.randn(D) * 0.02)
        self.id_weight = nn.Parameter(torch.zeros(hc.enc_layers + hc.dec_layers, hc.heads))
        self.svd_in = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, D))
        self.svd_rank = nn.Embedding(cfg.svd.n_components, D)
        self.activity = nn.Embedding(hc.num_activities, D)
        self.qtype = nn.Embedding(len(QUERY_TYPES), D)
        self.kind = nn.Embedding(4, D)  # 0 memory, 1 crop, 2 query, 3 svd
        self.time_query = nn.Parameter(torch.zeros(D))
        self.register_buffer("given", torch.tensor(_GIVEN), persistent=False)
        self.enc = nn.ModuleList(EncoderLayer(D, hc.heads, hc.ff_mult, hc.dropout, hc.attention_dropout) for _ in range(hc.enc_layers))
        self.dec = nn.ModuleList(DecoderLayer(D, hc.heads, hc.ff_mult, hc.dropout, hc.attention_dropout) for _ in range(hc.dec_layers))
        # Time locality of the decoder's cross-attention (ALiBi-style, per layer and head): a slot at
        # time t is biased toward memory tokens near t by -slope * |t - t_token| / slot spacing. Without
        # it the heads must learn to match two sinusoidal time codes through their projections; on
        # lvm-tiny they never did (time CE stayed at chance). Slopes start from ~0 (global) to 2 (local).
        init = torch.logspace(-2.5, 0.3, hc.heads)
        self.time_slope = nn.Parameter(torch.log(torch.expm1(init)).repeat(hc.dec_layers, 1))
        self.norm = nn.LayerNorm(D)
        # "The number of layers in all MLPs is set to 1" (LVM-Net A.4)
        self.activity_mlp = nn.Linear(D, hc.num_activities)
        # ... plus a readout over the memory: per activity, the best memory token's activity score
        # plus its log-probability of showing the queried object ("did a token of this object show
        # this activity"). Token scores are trained on the events' own tokens (token-activity loss,
        # export/train/heads_stage.py). Bias starts low: a token shows no activity unless it learns one.
        self.token_norm = nn.LayerNorm(D)
        self.token_activity = nn.Linear(D, hc.num_activities)
        nn.init.constant_(self.token_activity.bias, -4.0)
        self.box_mlp = nn.Linear(D, 4)
        self.start_mlp = nn.Linear(D, 1)
        self.end_mlp = nn.Linear(D, 1)
        # Object answers need an extent (a box only where the object is): where the object query's
        # event starts and ends, per slot, as TubeDETR does. Its own head, read through the same
        # start/end outputs for object queries, so time answers are untouched and the graph's
        # contract is the same. Two layers: the slots were trained for boxes, presence is not linear in them.
        self.extent = nn.Sequential(nn.Linear(D, D), nn.GELU(), nn.Linear(D, 2))

    def forward(self, mem, mem_t, mem_p, mem_valid, svd_basis, svd_sv,
                q_type, q_activity, q_object, q_window, q_times, q_mask, return_aux: bool = False):
        """mem (Bm,m,d) with Bm in {1, Q}; mem_t/mem_valid (Bm,m) float; mem_p (Bm,m) int64;
        svd_basis (Bm,r,d) orthonormal rows (zero rows allowed); svd_sv (Bm,r);
        q_type (Q,) int64; q_activity (Q,) int64 (ignored where not given); q_object (Q,P,d) crop
        tokens (ignored where not given); q_window (Q,2) seconds; q_times (Q,L) seconds; q_mask (Q,L).
        Returns activity_logits (Q,C), boxes (Q,L,4) x1y1x2y2 in [0,1], start_logits (Q,L),
        end_logits (Q,L) (time queries: the event's interval; object queries: the extent of the
        object's track); with ``return_aux`` (training) also a dict of the per-memory-token
        identity logits (Q,m), activity logits (Q,m,C), window mask (Q,m) and decoder slots (Q,L,D)."""
        Q = q_type.shape[0]
        D = self.D
        given = self.given[q_type]  # (Q, 2)
        has_act, has_obj = given[:, 0:1], given[:, 1:2]

        # MeMSVD read: h + (h Uᵀ) U, then into the head width.
        coef = mem @ svd_basis.transpose(1, 2)
        content = self.mem_in(mem + coef @ svd_basis)
        h = content + temporal_encoding(mem_t, D, self.fps, self.max_video_s)
        h = h + spatial_encoding(mem_p, D, self.grid) + self.kind.weight[0]
        h = h.expand(Q, -1, -1)
        obj = self.obj_in(q_object)  # (Q, P, D)
        gate = torch.gather(self.obj_gate(q_object), 1, mem_p.expand(Q, -1)[..., None].expand(-1, -1, D))
        h = h * (1.0 + has_obj[:, :, None] * gate)
        ident = self.identity_logits(mem, q_object)  # (Q, m)
        h = h + (has_obj * torch.sigmoid(ident))[..., None] * self.match_dir
        # log p(token shows the object), bounded so the FP16 graph keeps it finite
        id_logp = (-nn.functional.softplus(-ident)).clamp_min(-30.0)
        id_key = has_obj * id_logp
        crop = obj + spatial_encoding(torch.arange(self.P, device=obj.device), D, self.grid) + self.kind.weight[1]
        act = self.activity(q_activity.clamp(0, self.C - 1)) * has_act
        qtok = (act + self.qtype(q_type) + self.kind.weight[2])[:, None, :]
        sv = svd_sv / (svd_sv[:, :1] + 1e-6)
        svd_tok = self.svd_in(svd_basis * sv[..., None]) + self.svd_rank.weight + self.kind.weight[3]
        svd_tok = svd_tok.expand(Q, -1, -1)

        start, end = q_window[:, 0:1], q_window[:, 1:2]
        in_win = (mem_t >= start - self.window_tol) & (mem_t <= end + self.window_tol)  # (Q, m)
        keep_mem = in_win.to(torch.float32) * mem_valid
        keep = torch.cat([keep_mem, has_obj.expand(-1, self.P), torch.ones_like(has_obj),
                          (svd_sv > 0).to(torch.float32).expand(Q, -1)], dim=1)
        x = torch.cat([h, crop, qtok, svd_tok], dim=1)
        bias = key_bias(keep)
        id_key = torch.cat([id_key, torch.zeros_like(keep[:, id_key.shape[1]:])], dim=1)[:, None, None, :]
        id_w = nn.functional.softplus(self.id_weight)[None, :, :, None, None]  # (1, layers, heads, 1, 1)
        for li, layer in enumerate(self.enc):
            x = layer(x, bias + id_w[:, li] * id_key)
        m = h.shape[1]
        tok_act = self.token_activity(self.token_norm(x[:, :m]))  # (Q, m, C)
        read = tok_act + (id_key[:, 0, 0, :m] + (1.0 - keep_mem) * MASK_NEG)[..., None]
        # floor: an empty window adds the same constant to every activity (finite in FP16)
        readout = read.max(dim=1).values.clamp_min(-20.0)

        # Decoder: temporal queries over the asked window.
        rel = (q_times - start) / (end - start).clamp_min(1e-3)
        t = temporal_encoding(q_times, D, self.fps, self.max_video_s) + self.time_query
        t = t + temporal_encoding(rel * 100.0, D, 1.0, 100.0)
        self_bias = key_bias(q_mask)
        n_other = x.shape[1] - h.shape[1]  # crop, query and SVD tokens: no time, no locality bias
        ctx_t = torch.cat([mem_t.expand(Q, -1), torch.zeros_like(keep[:, :n_other])], dim=1)
        is_mem = torch.cat([torch.ones_like(keep_mem), torch.zeros_like(keep[:, :n_other])], dim=1)
        spacing = (end - start).clamp_min(1.0 / self.fps) / q_mask.sum(1, keepdim=True).clamp_min(1.0)
        dist = (q_times[:, :, None] - ctx_t[:, None, :]).abs() * (is_mem[:, None, :] / spacing[:, :, None])
        slopes = nn.functional.softplus(self.time_slope)  # (layers, heads)
        for li, layer in enumerate(self.dec):
            t = layer(t, x, self_bias, bias + id_w[:, len(self.enc) + li] * id_key
                      - slopes[li][None, :, None, None] * dist[:, None])
        t = self.norm(t)

        # "did it happen at some time in the window": the best slot per activity
        act_slot = self.activity_mlp(t) + ((1.0 - q_mask) * MASK_NEG)[..., None]
        activity_logits = act_slot.max(dim=1).values + readout
        cxcywh = torch.sigmoid(self.box_mlp(t))
        half = cxcywh[..., 2:] / 2
        boxes = torch.cat([cxcywh[..., :2] - half, cxcywh[..., :2] + half], dim=-1).clamp(0.0, 1.0)
        neg = (1.0 - q_mask) * MASK_NEG
        extent = self.extent(t)
        is_obj = (q_type == BY_NAME["object"].id)[:, None]
        start_logits = torch.where(is_obj, extent[..., 0], self.start_mlp(t).squeeze(-1)) + neg
        end_logits = torch.where(is_obj, extent[..., 1], self.end_mlp(t).squeeze(-1)) + neg
        if return_aux:
            return (activity_logits, boxes, start_logits, end_logits), {
                "identity": ident, "token_activity": tok_act, "keep": keep_mem, "slots": t}
        return activity_logits, boxes, start_logits, end_logits

    def identity_logits(self, mem: torch.Tensor, q_object: torch.Tensor) -> torch.Tensor:
        """mem (Bm, m, d), q_object (Q, P, d) -> (Q, m) logits that each memory token shows the crop's
        object (meaningful only for queries that give one)."""
        a = self.id_mem(mem)
        b = self.id_obj(q_object.mean(dim=1))
        return (a @ b[:, :, None]).squeeze(-1) * (self.D ** -0.5) + self.id_offset
