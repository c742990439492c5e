"""`cxrprep images`: a folder or CSV of DICOM/PNG/JPG files as one-image studies."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path

import typer

from cxrprep.cli.edge import errors, fail, finish_dataset, path_str, progress
from cxrprep.cli.options import (
    allow_outside_root_option,
    dataset_config,
    image_options,
    image_root_option,
    run_block,
)


@contextmanager
def run_errors(target: Path):
    """The errors that stop a whole run, as one-line messages: a bad input list (ValueError, exit 2), a
    dead worker pool or an output that cannot be written (disk full, folder removed: exit 1)."""
    from cxrprep.parallel import WorkerPoolError
    from cxrprep.shards import ShardWriteError

    try:
        with errors({ValueError: 2, (WorkerPoolError, ShardWriteError): (1, "the run stopped: ")}):
            yield
    except OSError as e:
        where = e.filename or target
        why = e.strerror or str(e)
        hint = " (the disk is full)" if e.errno == errno.ENOSPC else ""
        fail(f"the run stopped: {where}: {why}{hint}", 1)


def register(app: typer.Typer) -> None:
    @app.command()
    @image_options
    @run_block("subjects", "inputs")
    def images(
        # fmt: off
        src: Path = typer.Argument(
            ...,
            exists=True,
            help="A folder of .dcm/.png/.jpg files, or a CSV (columns: path, then optional study_id, subject_id, "
            "split, view and label columns; see above)",
        ),
        out: Path = typer.Option(Path("shards"), "--out", help="Shard root; writes OUT/DATASET/"),
        dataset: str = typer.Option("images", "--dataset", help="Dataset folder name, e.g. rsna-pneumonia"),
        image_root: Path = image_root_option(
            "Base of relative CSV paths (default: the CSV's folder); every path must resolve inside it",
            exists=True,
            file_okay=False,
        ),
        allow_outside_root: bool = allow_outside_root_option("CSV paths"),
        image: dict = None,  # the image block: see image_options
        run: dict = None,  # --workers --overwrite --part --max-failed: see run_block
        # fmt: on
    ) -> None:
        """Write DICOM/PNG/JPG files as one-image studies (evaluation sets such as RSNA Pneumonia, SIIM).

        SRC: a folder (every .dcm/.png/.jpg below it, split test) or a CSV
        with a header row. CSV columns (only path is required):

          path:       image file, absolute or relative to --image-root
          study_id:   default: the file name without suffix
          subject_id: patient id (default: study_id)
          split:      train | validate | test (default: test)
          view:       PA, AP, LATERAL... (default: DICOM ViewPosition)
          any other:  a label named after its finding: 1, 0, -1 or blank

        Example CSV (RSNA Pneumonia):

          path,study_id,split,Pneumonia
          stage_2_train_images/0004cfab.dcm,0004cfab,test,0

        Example: cxrprep images rsna.csv --dataset rsna-pneumonia --image-root /data/rsna --out shards/
        """
        from cxrprep.datasets.folder import ImagesConfig, run_images

        cfg, mf = dataset_config(
            ImagesConfig,
            image,
            run,
            "images",
            dataset=dataset,
            image_root=path_str(image_root),
            allow_outside_root=allow_outside_root,
        )
        with run_errors(out / dataset):
            m = run_images(src, out, cfg, progress=lambda it, n: progress(it, n, "images", "img"))
        finish_dataset(m, out / dataset, mf)
