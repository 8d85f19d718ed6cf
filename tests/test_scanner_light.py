"""The scanner light read from the light zone's pixels (edge_runtime/items/scanner_light.py)."""
from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.checkout import CheckoutVideo, heldout_video
from edge_runtime.items.detections import Detections
from edge_runtime.items.item_state import ItemState
from edge_runtime.items.scanner_light import PROPOSE_ONSETS, LightProposal, ScannerLight, ZoneRead, fuse
from edge_runtime.items.zones import LIGHT, Zones, scene_zones

DARK, GREEN, RED, ORANGE = (40, 32, 33), (60, 230, 90), (240, 60, 40), (240, 150, 40)
LIGHT_SQUARE = [[0.6, 0.2], [0.7, 0.2], [0.7, 0.3], [0.6, 0.3]]   # pixels 12-13 of a 20-pixel frame


def frame(light=DARK, over=None):
    """A 20x20 grey frame whose light (pixels 12-13, rows 4-5) shows ``light``; ``over``: that colour over
    the light's left half (something in front of it)."""
    f = np.full((20, 20, 3), 120, np.uint8)
    f[4:6, 12:14] = light
    if over is not None:
        f[4:6, 12:13] = over
    return f


def dets(t, light=None):
    return Detections(t, np.zeros((0, 4)), np.zeros(0), np.zeros(0), np.zeros(0), light)


def test_the_zone_reads_the_lights_colour_and_tells_a_thing_in_front_of_it_from_a_flash():
    read = ZoneRead(LIGHT_SQUARE)
    seen = [read.read(frame(c, o), k * 0.2) for k, (c, o) in enumerate([(DARK, None), (DARK, None), (GREEN, None), (DARK, None),
                                                 (RED, None), (DARK, None), (DARK, ORANGE), (DARK, None),
                                                 (DARK, None)])]
    # the first frame only sets what the light looks like; an orange box moving in (and out) is no red flash
    assert seen == ["hidden", "off", "green", "off", "red", "off", "hidden", "hidden", "off"]


@pytest.mark.parametrize("head, zone, light", [
    (None, "green", None),        # the head decides that a flash came: an arm in front of the light is no read
    ("red", "green", "green"),    # the zone names its colour
    ("green", "off", None),       # the light plainly off: no flash
    ("red", "hidden", "red"),     # hidden: the head's read stands
])
def test_the_head_says_a_flash_came_and_the_zone_says_its_colour(head, zone, light):
    assert fuse(head, zone) == light


def test_the_light_zone_is_proposed_where_flashes_light_the_frame_and_little_else_moves():
    rng = np.random.default_rng(0)
    prop = LightProposal()
    t = 0.0
    for k in range(PROPOSE_ONSETS):
        for _ in range(20):  # a green item wanders over the glass (columns 2-9) between flashes
            f = frame()
            x = int(rng.integers(2, 8))
            f[10:13, x:x + 2] = GREEN
            prop.add(f, t, None, 0.0)
            t += 0.2
        assert prop.zone() is None
        prop.add(frame(GREEN if k % 3 else RED), t, "red" if k % 4 == 0 else "green", 0.95)  # the head's colour errs
        t += 0.2
    x1, y1 = prop.zone()[0]
    x2, y2 = prop.zone()[2]
    assert (x1, y1, x2, y2) == pytest.approx((0.6, 0.2, 0.7, 0.3))


def test_an_item_state_reads_the_light_from_the_frames_and_keeps_a_proposed_light_zone_in_its_snapshot():
    zones = Zones.from_dict({"scanner": [[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7]]})
    state = ItemState(zones, bundle_id="b")
    assert "proposing the light zone" in state.status()["light"]
    t = 0.0
    for k in range(PROPOSE_ONSETS):
        for _ in range(20):
            state.update(dets(t), frame())
            t += 0.2
        state.update(dets(t, "green"), frame(GREEN))
        t += 0.2
    assert state.zones.polygons[LIGHT] and state.status()["light"].startswith("proposed")
    # the head reads a green flash red: the light zone's pixels name it green
    light = ScannerLight(state.zones.polygons[LIGHT], "proposed")
    light.see(dets(t), frame())
    assert light.see(dets(t + 0.2, "red"), frame(GREEN))[0].light == "green"
    restored = ItemState(zones, bundle_id="b")
    restored.load_state_dict(state.state_dict(), "b")
    assert restored.zones.polygons[LIGHT] == state.zones.polygons[LIGHT]
    assert restored.status()["light"].startswith("proposed")
    # configured zones with a light read it from the start; so does a light zone given apart from the zones
    assert ItemState(zones.with_light(LIGHT_SQUARE), bundle_id="b").status()["light"].startswith("configured")
    apart = ItemState(zones, bundle_id="b", light_zone=LIGHT_SQUARE)
    apart.update(dets(0.0), frame())
    assert apart.status()["light"].startswith("configured")
    assert apart.light.see(dets(0.2, "red"), frame(GREEN))[0].light == "green"


@pytest.mark.parametrize("origin", ["configured", "proposed"])
def test_a_light_zone_that_sees_no_flash_where_the_head_is_sure_of_them_is_doubted(origin):
    zones = Zones.from_dict({"scanner": [[0.3, 0.3], [0.7, 0.3], [0.7, 0.7], [0.3, 0.7]]})
    elsewhere = [[0.1, 0.8], [0.2, 0.8], [0.2, 0.9], [0.1, 0.9]]   # the camera moved: nothing lights there
    state = ItemState(zones.with_light(elsewhere) if origin == "configured" else zones, bundle_id="b")
    if origin == "proposed":
        state.light = ScannerLight(elsewhere, "proposed")
        state.zones = zones.with_light(elsewhere)
    t = 0.0
    for k in range(10):
        for _ in range(20):
            state.update(dets(t), frame())
            t += 0.2
        state.update(dets(t, "green"), frame(GREEN))  # the flash, which the zone sees off
        t += 0.2
    line = state.status()["light"]
    assert "saw the light off at 10 of the last 10 flashes" in line
    if origin == "configured":  # the staff's zone stays, and the status says to check it
        assert line.startswith("configured") and "check where it is" in line and LIGHT in state.zones.polygons
    else:  # a proposed one is dropped and proposed again
        assert "proposing it again" in line and LIGHT not in state.zones.polygons


def test_the_light_zone_is_no_place_for_an_item():
    z = Zones.from_dict({"scanner": [[0.4, 0.4], [0.6, 0.4], [0.6, 0.6], [0.4, 0.6]], LIGHT: LIGHT_SQUARE})
    assert z.zone_of(0.65, 0.25) is None and z.top == pytest.approx(0.4)


def test_the_generators_light_reads_its_flashes_in_its_light_zone():
    seed, look = heldout_video(0, 0)
    video = CheckoutVideo(seed, 300, look=look)
    read = ZoneRead(scene_zones(video).polygons[LIGHT])
    t0, _, colour = next(f for f in video.script.flashes if f[0] > 2.0)
    before = [read.read(f, t) for t, f in video.frames(5.0, t0 - 1.0, t0 - 0.05)]
    assert before[1:] == ["off"] * (len(before) - 1)
    t, lit = next(video.frames(5.0, np.ceil(t0 * 5.0) / 5.0))
    assert read.read(lit, t) == colour
