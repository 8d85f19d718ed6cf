"""Procedural self-checkout videos with ReST-style ground truth and queries (numpy + OpenCV only).

    from edge_runtime.checkout import CheckoutVideo, ACTIVITIES, PRODUCTS, TRAIN_LOOKS, EVAL_LOOKS
    v = CheckoutVideo(seed=7, duration_s=1800, size=112)          # look derived from the seed
    for t, img in v.frames(fps=1.0): ...
    ann = v.annotations()                                          # docs/annotation-format.md
    qs = sample_queries(ann, 100, np.random.default_rng(0))

Modules: ``catalog`` (activities, products and their drawings), ``scene`` (counter layout, looks,
camera), ``script`` (the event timeline), ``render`` (drawing), ``annotations`` (ground truth),
``script_builder`` (one video's script from its seed), ``queries`` (ReST query sampling),
``absent_queries`` (questions whose answer is "not seen"), ``metrics`` (ReST's metrics),
``seen_metrics`` (scoring "not seen" and confidence), ``shrink`` (scan avoidance: rates and choices),
``video`` (the public class).
"""
from .annotations import BOX_FPS
from .catalog import ACTIVITIES, ACTIVITY_IDS, BASE_ACTIVITIES, PRODUCT_IDS, PRODUCTS
from .queries import WINDOWS, Query, sample_queries
from .shrink import ShrinkRates
from .scene import EVAL_LOOKS, EVAL_SEED_BASE, LOOKS, TRAIN_LOOKS, heldout_video, training_video
from .video import CheckoutVideo

__all__ = [
    "ACTIVITIES", "ACTIVITY_IDS", "BASE_ACTIVITIES", "BOX_FPS", "CheckoutVideo", "EVAL_LOOKS", "EVAL_SEED_BASE", "LOOKS", "PRODUCTS", "PRODUCT_IDS",
    "Query", "ShrinkRates", "TRAIN_LOOKS", "WINDOWS", "heldout_video", "sample_queries", "training_video",
]
