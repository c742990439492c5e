"""Batched, cached Marian back-translation (English -> pivot -> English) of report sentences.

The unit of work is the *sentence*: every sentence of ``findings_sentences`` and ``impression_sentences``
is collected over the whole dataset, de-duplicated (real reports repeat themselves a lot), sorted by
token length into batches (little padding) and translated once per variant. Results go into a
persistent SQLite cache keyed by (sentence, forward model id+hash, backward model id+hash, decoding
settings, variant index), committed after every batch: a re-run, another dataset with the same
sentences, or a run that was killed half-way reuses every finished translation.

Guarantees on every output sentence:

* ``___`` (de-identified text in MIMIC) survives: it is replaced by a placeholder before translation and
  restored after; if the model dropped or duplicated a placeholder, the source sentence is kept (counted
  as ``deid_fallback``);
* a number of the source (``2.5`` in "2.5 cm") that is missing from the back-translation means the
  meaning changed: the source sentence is kept (counted as ``number_fallback``);
* inputs longer than the model's limit (``max_position_embeddings`` tokens) are truncated and counted.

Backends: ``transformers`` (CPU in float32 or bfloat16, or CUDA in float16) and ``ct2`` (CTranslate2;
int8 on CPU, float16 on CUDA; the Marian folder is converted once into ``cache_dir/ct2/``). Greedy output is the same
from both
at the same precision.

Modules: ``backend.py`` (settings, resolving a Marian model, the transformers and CTranslate2 backends),
``cache.py`` (the SQLite sentence cache), ``pipeline.py`` (protect/restore, token batches, Translator),
``rewrite.py`` (run_augment over a dataset folder); the atomic folder swap is cxrprep/shards/swap.py.

``run_augment`` rewrites a finished dataset folder with ``findings_bt`` / ``impression_bt`` filled: the
new parts go to a hidden sibling folder and are swapped in atomically, so a kill at any moment leaves
either the old complete dataset or the new complete one.
"""

from cxrprep.text.translate.backend import (
    AugmentConfig,
    Backend,
    CT2Backend,
    Decoding,
    ModelNotAvailable,
    ModelRef,
    TransformersBackend,
    convert_ct2,
    load_backend,
    resolve_model,
)
from cxrprep.text.translate.cache import CacheError, TranslationCache
from cxrprep.text.translate.pipeline import (
    PLACEHOLDER,
    TranslateStats,
    Translator,
    keeps_numbers,
    make_translator,
    protect,
    restore,
)
from cxrprep.text.translate.rewrite import SECTIONS, AugmentResult, run_augment, summary

__all__ = [
    "AugmentConfig",
    "AugmentResult",
    "Backend",
    "CacheError",
    "CT2Backend",
    "Decoding",
    "ModelNotAvailable",
    "ModelRef",
    "PLACEHOLDER",
    "SECTIONS",
    "TransformersBackend",
    "TranslateStats",
    "TranslationCache",
    "Translator",
    "convert_ct2",
    "keeps_numbers",
    "load_backend",
    "make_translator",
    "protect",
    "resolve_model",
    "restore",
    "run_augment",
    "summary",
]
