"""Rendering the prompts of every study at once (numpy + Arrow) from counter-based random streams keyed by
``--seed`` and the study id, so a study's prompts do not depend on which other studies are in the run."""

from __future__ import annotations

from cxrprep.labels import CHEXPERT_LABELS, NIH_LABELS, NO_FINDING_COMPATIBLE
from cxrprep.text.template_qualifiers import agrees, profiles, qualifiers_of
from cxrprep.text.templates import Templates

_M64 = (1 << 64) - 1


def _mix(x):
    """splitmix64 finaliser on a uint64 numpy array: a counter-based random stream."""
    import numpy as np

    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def study_keys(seed: int, study_ids):  # -> numpy.ndarray of uint64
    """64-bit key per study: FNV-1a of the study id's UTF-8 bytes, mixed with ``--seed``; computed
    column-wise with numpy. The study's random stream depends on nothing else (not on order, workers or
    --part)."""
    import numpy as np
    import pyarrow as pa

    n = len(study_ids)
    arr = pa.array(study_ids, pa.large_string())
    offs = np.frombuffer(arr.buffers()[1], np.int64)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], np.uint8) if n and offs[-1] > offs[0] else np.zeros(1, np.uint8)
    lens = np.diff(offs)
    h = np.full(n, 0xCBF29CE484222325, np.uint64)
    prime = np.uint64(0x100000001B3)
    with np.errstate(over="ignore"):
        for j in range(int(lens.max()) if n else 0):
            live = lens > j
            b = data[np.minimum(offs[:-1] + j, len(data) - 1)].astype(np.uint64)
            h = np.where(live, (h ^ b) * prime, h)
        return _mix(h ^ _mix(np.full(n, seed & _M64, np.uint64)))


def _uniform(keys, tag: int, variant, cls):
    """uint64 random value per (study key, purpose tag, variant, class), all broadcast numpy arrays."""
    import numpy as np

    with np.errstate(over="ignore"):
        c = (
            (np.uint64(tag) << np.uint64(40))
            + (np.asarray(variant, np.uint64) << np.uint64(8))
            + np.asarray(cls, np.uint64)
        )
        return _mix(keys ^ _mix(c))


def state_codes(kind: str, labels, policy: str, keys, negatives: int):
    """(n, C) int8 matrix of sentence states per study and class: 0 none, 1 positive, 2 negative,
    3 uncertain; the same rules as chexpert_states / nih_states (NIH negatives: ``negatives`` absent
    classes drawn per study without replacement), the No Finding conflict rule included."""
    st = raw_state_codes(kind, labels, policy, keys, negatives)
    resolve_no_finding_codes(kind, st)
    return st


def resolve_no_finding_codes(kind: str, st):
    """The conflict rule (cxrprep.labels.resolve_no_finding) on a state matrix, in place: where No Finding is
    positive together with a positive or uncertain finding (Support Devices excepted), the No Finding
    sentence is dropped. Returns the (n,) bool mask of those studies."""
    import numpy as np

    names = CHEXPERT_LABELS if kind == "chexpert" else NIH_LABELS
    nf = names.index("No Finding")
    other = np.array([n not in NO_FINDING_COMPATIBLE for n in names])
    mask = (st[:, nf] == 1) & ((st[:, other] == 1) | (st[:, other] == 3)).any(axis=1)
    st[mask, nf] = 0
    return mask


def raw_state_codes(kind: str, labels, policy: str, keys, negatives: int):
    """state_codes before the No Finding conflict rule."""
    import numpy as np

    lab = labels  # (n, C) float with nan for null
    st = np.zeros(lab.shape, np.int8)
    if kind == "chexpert":
        st[lab == 1] = 1
        st[lab == 0] = 2
        unc = {"uncertain": 3, "positive": 1, "negative": 2, "drop": 0}[policy]
        st[lab == -1] = unc
        nf = CHEXPERT_LABELS.index("No Finding")
        st[:, nf] = np.where(st[:, nf] == 1, 1, 0)  # never "no No Finding"
        return st
    st[lab == 1] = 1
    absent = lab == 0
    absent[:, NIH_LABELS.index("No Finding")] = False
    if negatives:
        n, c = lab.shape
        r = _uniform(keys[:, None], 1, 0, np.arange(c)[None, :])
        r = np.where(absent, r, np.uint64(_M64))
        order = np.argsort(r, axis=1, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(c)[None, :].repeat(n, 0), axis=1)
        st[absent & (rank < negatives)] = 2
    return st


def _pool_table(t: Templates, class_names):
    """Every sentence once (``text``), and for each (class, state code, qualifier profile) the slice of
    ``members`` (indices into ``text``) holding the sentences that agree with that profile: offsets and sizes
    (C, 4, P) and the number of profiles per (class, state) (C, 4). A pool with no severity or side has one
    profile whose slice is the whole pool, in order."""
    import numpy as np

    missing = [name for name in class_names if t.classes.get(t.canonical(name)) is None]
    if missing:
        raise ValueError(
            f"{t.path}: no templates for {len(missing)} classes: {', '.join(missing)}; add them under classes:"
        )
    text: list[str] = []
    members: list[int] = []
    slices: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for c, name in enumerate(class_names):
        for code, state in ((1, "positive"), (2, "negative"), (3, "uncertain")):
            pool = t.sentences(name, state)
            base = len(text)
            text.extend(pool)
            quals = [qualifiers_of(x) for x in pool]
            for prof in profiles(pool):
                agree = [base + i for i, q in enumerate(quals) if agrees(q, prof)]
                slices.setdefault((c, code), []).append((len(members), len(agree)))
                members.extend(agree)
    width = max([len(v) for v in slices.values()] + [1])
    offs = np.zeros((len(class_names), 4, width), np.int64)
    sizes = np.zeros((len(class_names), 4, width), np.int64)
    nprof = np.zeros((len(class_names), 4), np.int64)
    for (c, code), sl in slices.items():
        nprof[c, code] = len(sl)
        for j, (o, n) in enumerate(sl):
            offs[c, code, j], sizes[c, code, j] = o, n
    return text, np.asarray(members + [0], np.int64), offs, sizes, nprof


def render_bulk(t: Templates, class_names, states, keys, variants: int):
    """Prompt reports for many studies at once -> (pyarrow list<string> array, one list of ``variants``
    prompts per study (empty when the study has no sentence to say), prompts per study).

    Each variant of a study is one sentence per (class, state) that has sentences, drawn from the
    pre-expanded pools of ``Templates.sentences``, in a random order; the draws come from the study's
    key (a counter-based generator), so they do not depend on which other studies are rendered. Each study
    first draws one qualifier profile per class (severity, side; see cxrprep/text/template_qualifiers.py) and
    every variant draws from the sentences that agree with it, so no two texts of a study contradict."""
    import numpy as np

    pool_text, members, offs, sizes, nprof = _pool_table(t, class_names)
    n, ncls = states.shape
    cidx = np.arange(ncls)[None, :]
    k = (sizes[cidx, states, 0] > 0).sum(axis=1)  # sentences per prompt
    has = k > 0
    v = np.arange(variants, dtype=np.uint64)[None, :, None]
    cls = np.arange(ncls, dtype=np.uint64)[None, None, :]
    pieces = []
    for lo in range(0, n, 8192):  # bounded memory: (studies, variants, classes) arrays per block
        hi = min(n, lo + 8192)
        st, kk = states[lo:hi], keys[lo:hi][:, None, None]
        npf = np.maximum(nprof[cidx, st], 1).astype(np.uint64)[:, None, :]
        prof = (_uniform(kk, 4, np.zeros(1, np.uint64), cls) % npf).astype(np.int64)[:, 0, :]  # one per study
        sz = sizes[cidx, st, prof][:, None, :].astype(np.uint64)
        pick = _uniform(kk, 2, v, cls) % np.maximum(sz, np.uint64(1))
        sent = members[offs[cidx, st, prof][:, None, :] + pick.astype(np.int64)]
        # shuffle each prompt's sentences: sort by a random key, classes with nothing to say last
        order = np.argsort(np.where(sz > 0, _uniform(kk, 3, v, cls) >> np.uint64(1), np.uint64(_M64)), axis=2)
        sent = np.take_along_axis(sent, order, axis=2)
        valid = np.take_along_axis(np.broadcast_to(sz > 0, sent.shape), order, axis=2)
        pieces.append(sent[valid])
    return _assemble(pool_text, pieces, k, has, n, variants)


def _assemble(pool_text, pieces, k, has, n: int, variants: int):
    """Join the drawn sentence indices into prompts -> (list<string> array, prompts per study, characters)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    flat = np.concatenate(pieces) if pieces else np.zeros(0, np.int64)
    group_len = np.repeat(k[has], variants)
    inner = np.zeros(len(group_len) + 1, np.int64)
    np.cumsum(group_len, out=inner[1:])
    texts = pa.array(pool_text, pa.string()).take(pa.array(flat, pa.int64()))
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(inner, pa.int32()), texts), " ")
    outer = np.zeros(n + 1, np.int64)
    np.cumsum(np.where(has, variants, 0), out=outer[1:])
    prompts = pa.ListArray.from_arrays(pa.array(outer, pa.int32()), joined)
    chars = np.zeros(n, np.int64)  # characters of a study's prompts (for the writer's size estimate)
    if len(joined):
        chars[has] = pc.utf8_length(joined).to_numpy(zero_copy_only=False).reshape(-1, variants).sum(axis=1)
    return prompts, np.where(has, variants, 0), chars
