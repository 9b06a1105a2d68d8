"""The web's side of the hints sidecar: a body checked, and NAME_hints.json placed whole in the inbox."""

import json

import pytest

from daemon.web.hints import checked, place_sidecar, sidecar_name
from daemon.web.ondisk import Refused


def test_a_good_body_comes_back_as_the_same_points():
    body = b'{"points": [{"x": 0.31, "y": 0.62, "color": "#8a3b2c"}]}'
    assert json.loads(checked(body))["points"][0]["color"] == "#8a3b2c"


@pytest.mark.parametrize("body", [b"not json", b'{"points": [{"x": 2, "y": 0.5, "color": "#000000"}]}',
                                  b'{"points": []}'])
def test_a_bad_body_is_refused_with_400_and_a_reason(body):
    with pytest.raises(Refused) as e:
        checked(body)
    assert e.value.status == 400 and str(e.value).startswith("bad hints")


def test_the_sidecar_takes_the_pictures_inbox_stem_and_leaves_no_temp_file(tmp_path):
    assert sidecar_name("plate-1_before.png") == "plate-1_hints.json"
    placed = place_sidecar(tmp_path, "plate-1_before.png", b'{"points": []}')
    assert placed.name == "plate-1_hints.json"
    assert [p.name for p in tmp_path.iterdir()] == ["plate-1_hints.json"]
