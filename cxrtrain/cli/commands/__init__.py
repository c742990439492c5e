"""One module per command group; each defines ``register(app)`` (cxrtrain/cli/app.py registers them), and the exit
codes the evaluation commands share."""


def eval_errors() -> dict:
    """Exit codes of the evaluation commands (eval, fewshot, bench-suite) for ``cxrprep.cli.edge.errors``: bad
    usage (no rows in the split, an unreadable checkpoint, a missing file, a bad prompt file) exits 2; work that
    failed (ValueError, RuntimeError) exits 1."""
    from cxrprep.text.templates import TemplateError
    from cxrtrain.evaluate import EvalUsageError

    return {(EvalUsageError, FileNotFoundError, TemplateError): 2, (ValueError, RuntimeError): 1}
