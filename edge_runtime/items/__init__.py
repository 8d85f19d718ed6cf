"""Items at the checkout: per-frame detections, the zones they move between, and what the runtime makes of them."""
