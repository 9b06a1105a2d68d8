"""Color points in the Predictor: the hint format, and a result that obeys its points and keeps the rest."""

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.support.processes import ROOT
from unet import Predictor
from unet.hints import MAX_POINTS, HintError, load_hints, parse_hints, read_strokes
from unet.metrics import rgb_to_ab

MODELS = ROOT / "models"
BLUE = "#98c0ff"   # a blue the light field (gray 200) can hold at its own lightness


@pytest.fixture(scope="module")
def pred():
    return Predictor(MODELS / "colorize", device="cpu")


def two_fields(w=384, h=256):
    """A light field on the left, a dark disk on the right: two things the gray tells apart."""
    im = Image.new("L", (w, h), 200)
    ImageDraw.Draw(im).ellipse((w * 0.55, h * 0.15, w * 0.95, h * 0.85), fill=60)
    rng = np.random.default_rng(0)
    return Image.fromarray((np.asarray(im) + rng.normal(0, 3, (h, w))).clip(0, 255).astype(np.uint8))


def ab_at(im, x, y):
    rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    return rgb_to_ab(rgb[int(y * im.height), int(x * im.width)])


@pytest.mark.parametrize("body,said", [
    (b"{not json", "not valid JSON"),
    (b"\xff\xfe", "not UTF-8"),
    (b"[]", "JSON object"),
    (b'{"points": [], "strength": 2}', "unknown key 'strength'"),
    (b'{"dots": []}', "unknown key 'dots'"),
    (b'{"points": {}}', "a list"),
    (b'{"points": [{"x": 0.5, "y": 0.5}]}', "no 'color'"),
    (b'{"points": [{"x": 0.5, "y": 0.5, "color": "#123456", "size": 3}]}', "unknown key 'size'"),
    (b'{"points": [{"x": 1.2, "y": 0.5, "color": "#123456"}]}', "outside the picture"),
    (b'{"points": [{"x": -0.01, "y": 0.5, "color": "#123456"}]}', "outside the picture"),
    (b'{"points": [{"x": true, "y": 0.5, "color": "#123456"}]}', "must be a number"),
    (b'{"points": [{"x": "0.5", "y": 0.5, "color": "#123456"}]}', "must be a number"),
    (b'{"points": [{"x": 0.5, "y": NaN, "color": "#123456"}]}', "must be a number"),
    (b'{"points": [{"x": 0.5, "y": 0.5, "color": "red"}]}', "sRGB hex"),
    (b'{"points": [{"x": 0.5, "y": 0.5, "color": "#12345"}]}', "sRGB hex"),
])
def test_a_bad_hint_is_a_clear_error(body, said):
    with pytest.raises(HintError, match=said):
        parse_hints(body)


def test_the_point_count_is_capped_and_a_good_file_reads_back():
    many = {"points": [{"x": 0.5, "y": 0.5, "color": "#000000"}] * (MAX_POINTS + 1)}
    with pytest.raises(HintError, match=f"at most {MAX_POINTS}"):
        parse_hints(many)
    h = parse_hints({"points": [{"x": 0, "y": 1, "color": "#8A3b2c"}]})
    assert len(h) == 1 and h.colors.tolist() == [[0x8a, 0x3b, 0x2c]]
    assert parse_hints(h.to_json()).colors.tolist() == h.colors.tolist()
    assert not parse_hints({"points": []})


def test_hint_files_name_themselves_in_their_errors(tmp_path):
    bad = tmp_path / "a_hints.json"
    bad.write_text('{"points": [{"x": 2, "y": 0, "color": "#000000"}]}')
    with pytest.raises(HintError, match=r"a_hints\.json: point 1: x = 2"):
        load_hints(bad)
    opaque = tmp_path / "b_hints.png"
    Image.new("RGB", (8, 8), "red").save(opaque)
    with pytest.raises(HintError, match="no transparency"):
        load_hints(opaque)
    empty = tmp_path / "c_hints.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(empty)
    with pytest.raises(HintError, match="no opaque pixels"):
        load_hints(empty)
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8)).save(jpeg, "JPEG")
    with pytest.raises(HintError, match="must be a PNG"):
        read_strokes(jpeg.getvalue())
    with pytest.raises(HintError, match="cannot be read"):
        read_strokes(b"\x89PNG\r\n\x1a\n truncated")


def test_no_points_give_todays_result_bit_for_bit(pred):
    im = two_fields()
    today = np.asarray(pred.predict([im])[0])
    assert np.array_equal(np.asarray(pred.predict([im], [parse_hints(b'{"points": []}')])[0]), today)
    # A picture with points in the same batch changes nothing for the one without.
    h = parse_hints({"points": [{"x": 0.2, "y": 0.5, "color": BLUE}]})
    mixed = pred.predict([im, im], [h, None])
    assert np.array_equal(np.asarray(mixed[1]), today)
    assert not np.array_equal(np.asarray(mixed[0]), today)


def test_a_result_obeys_its_points_and_the_other_side_of_an_edge_keeps_its_color(pred):
    im = two_fields()
    auto = pred.predict([im])[0]
    pts = [(0.15, 0.3), (0.3, 0.7), (0.45, 0.5)]          # all on the light field
    h = parse_hints({"points": [{"x": x, "y": y, "color": BLUE} for x, y in pts]})
    out = pred.predict([im], [h])[0]
    want = rgb_to_ab(np.array([int(BLUE[i:i + 2], 16) for i in (1, 3, 5)], dtype=np.float64))
    for x, y in pts:
        assert np.hypot(*(ab_at(out, x, y) - want)) <= 10
    # Elsewhere on the light field the blue spread; inside the disk the automatic color stays.
    assert np.hypot(*(ab_at(out, 0.22, 0.5) - want)) < np.hypot(*(ab_at(auto, 0.22, 0.5) - want)) - 10
    assert np.hypot(*(ab_at(out, 0.75, 0.5) - ab_at(auto, 0.75, 0.5))) < 5
    # Lightness is the picture's own.
    assert np.abs(np.asarray(out.convert("L"), float) - np.asarray(im, float)).mean() < 2


def test_a_stroke_png_colors_what_it_covers(pred, tmp_path):
    im = two_fields()
    layer = Image.new("RGBA", (96, 64), (0, 0, 0, 0))     # any size: it is scaled to the picture
    ImageDraw.Draw(layer).ellipse((60, 20, 80, 44), fill=(200, 40, 40, 255))
    path = tmp_path / "p_hints.png"
    layer.save(path)
    out = pred.predict([im], [load_hints(path)])[0]
    a, b = ab_at(out, 0.73, 0.5)
    assert a > 25 and abs(b) < a                             # red in the disk
    assert np.hypot(*ab_at(out, 0.2, 0.5)) < np.hypot(a, b) / 2


def test_the_live_solve_is_the_full_solve(pred):
    im = two_fields()
    guide = pred.guide_for(im)
    first = parse_hints({"points": [{"x": 0.2, "y": 0.4, "color": BLUE}]})
    more = parse_hints({"points": [{"x": 0.2, "y": 0.4, "color": BLUE}, {"x": 0.7, "y": 0.5, "color": "#30a040"}]})
    guide.solve(first, live=True)
    live = guide.solve(more, live=True)                      # one column kept, one new
    assert np.abs(live - guide.solve(more)).max() < 1e-4
    view = guide.picture(live)
    assert view.size == (guide.size[1], guide.size[0]) and view.mode == "RGB"


def test_points_on_a_model_that_does_not_colorize_are_refused():
    rev = Predictor(MODELS / "reverse", device="cpu")
    with pytest.raises(HintError, match="for colorizing"):
        rev.prepare(two_fields(), parse_hints(json.dumps({"points": [{"x": 0, "y": 0, "color": BLUE}]})))
