import cv2
from typer.testing import CliRunner

from cxrprep.cli import app


def test_inspect_counts_labels_and_sheet(demo_shards, tmp_path):
    png = tmp_path / "sheet.png"
    r = CliRunner().invoke(app, ["inspect", str(demo_shards / "mimic-cxr"), "--sheet", str(png), "--tiles", "5",
                                 "--verify"])
    assert r.exit_code == 0, r.output
    assert "rows 24" in r.output and "Pleural Effusion" in r.output and "sample " in r.output
    sheet = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    assert sheet is not None and sheet.shape[1] == 4 * 192 and sheet.shape[0] == 2 * (192 + 40)
    r = CliRunner().invoke(app, ["inspect", str(tmp_path)])
    assert r.exit_code == 1 and "manifest.json" in r.output
