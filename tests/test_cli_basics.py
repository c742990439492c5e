from typer.testing import CliRunner

from cxrprep.cli.app import app as prep_app
from cxrtrain.cli.app import app as train_app

runner = CliRunner()


def test_versions_and_help():
    for app, name in ((prep_app, "cxrprep"), (train_app, "cxrtrain")):
        r = runner.invoke(app, ["--version"])
        assert r.exit_code == 0 and r.output.startswith(name)
        r = runner.invoke(app, ["--help"])
        assert r.exit_code == 0 and "Usage" in r.output


def test_merge_bad_dir(tmp_path):
    r = runner.invoke(prep_app, ["merge", str(tmp_path)])
    assert r.exit_code == 1
