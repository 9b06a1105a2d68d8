"""report.png: the learning curves' axes read apart even when the values barely move."""

from PIL import Image

from daemon.learning.report import draw_report, ticks


def test_a_narrow_psnr_range_gets_distinct_tick_labels():
    # A fine-tune's validation PSNR often moves by hundredths of a dB: "28, 28, 28" said nothing.
    labels = [label for _, label in ticks(28.0036, 28.0964)]        # 28.01 .. 28.09, padded as the chart pads
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert labels[0].startswith("28.0") and all(len(label.split(".")[1]) == 2 for label in labels), labels


def test_tick_labels_are_round_values_inside_the_axis():
    for lo, hi, want in [(25.0, 30.0, "27"), (-1.84, -1.80, "-1.82"), (0.0, 2400.0, "1000"), (0.1, 0.35, "0.25"),
                         (28.0001, 28.0009, "28.0004")]:
        values = ticks(lo, hi)
        assert 3 <= len(values) <= 6 and all(lo - 1e-9 <= v <= hi + 1e-9 for v, _ in values), (lo, hi, values)
        labels = [label for _, label in values]
        assert want in labels and len(set(labels)) == len(labels), (lo, hi, labels)
        assert all(float(label) == round(v, 6) for v, label in values), labels


def test_a_report_with_a_narrow_range_is_drawn(tmp_path):
    history = [{"seconds": 0.0, "train_loss": None, "val_loss": -1.84, "val_psnr": 28.01}] + [
        {"seconds": 20.0 * i, "train_loss": -1.80 - 0.004 * i, "val_loss": -1.84 + 0.003 * i,
         "val_psnr": 28.01 + 0.01 * i} for i in range(1, 9)]
    path = draw_report(tmp_path / "report.png", ["colorize (colorize): version 2 REJECTED", "why"], history, [])
    with Image.open(path) as im:
        assert im.width >= 760 and im.getextrema() != ((255, 255), (255, 255), (255, 255))
