import cv2
from typer.testing import CliRunner

from cxrprep.cli.app import app


def test_inspect_counts_labels_and_sheet(demo_shards, tmp_path):
    png = tmp_path / "sheet.png"
    r = CliRunner().invoke(
        app, ["inspect", str(demo_shards / "mimic-cxr"), "--sheet", str(png), "--tiles", "5", "--verify"]
    )
    assert r.exit_code == 0, r.output
    assert "rows 24" in r.output and "Pleural Effusion" in r.output and "sample " in r.output
    sheet = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert sheet is not None and sheet.shape[1] == 4 * 224 and sheet.shape[0] == 2 * (224 + 92)
    r = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 1 and "manifest.json" in r.output


def test_captions_wrap_at_words_and_keep_ids():
    from cxrprep.shards.inspect import _width, shorten, wrap_text

    text = (
        "Interval improvement in bibasilar atelectasis. Lines and tubes in standard position. Findings suggest "
        "a small left pleural effusion without pneumothorax."
    )
    words = text.split()
    lines = wrap_text(text, 216, 0.36, 3)
    assert len(lines) == 3 and lines[-1].endswith(" ...")
    got = " ".join(lines)[:-4].split()
    assert got == words[: len(got)]  # whole words only, in order: nothing cut mid-word
    assert all(_width(x, 0.36) <= 216 for x in lines)
    full = wrap_text(text, 216, 0.36, 20)
    assert " ".join(full).split() == words  # enough lines: every word, nothing lost
    # a long dataset id is shown whole, broken after its separators
    sid = "patient64541/study1_view1_frontal  [AP]"
    assert "".join(wrap_text(sid, 120, 0.4, 4)).replace(" ", "") == sid.replace(" ", "")
    assert shorten("No acute cardiopulmonary process.", 20) == "No acute ..."
    assert shorten("Short.", 20) == "Short."
