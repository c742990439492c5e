"""The Python API in one notebook-sized script (docs/api.md; tests/test_api.py runs it).

    python examples/api_example.py RUN SHARDS/mimic-cxr [REPORT.txt]

RUN: a cxrtrain run folder (e.g. demo-out/runs/tiny); the dataset folder gives a few test images.
"""

from __future__ import annotations

import sys

import cxrprep
import cxrtrain


def main(run: str, dataset: str, report_path: str | None = None) -> dict:
    # 1. a report -> sections -> sentences (what `cxrprep reports` stores per study)
    text = (
        open(report_path).read()
        if report_path
        else (
            "FINDINGS: The heart is mildly enlarged. Small left pleural effusion. No pneumothorax.\n\n"
            "IMPRESSION: Cardiomegaly with a small left effusion."
        )
    )
    report = cxrprep.parse_report(text)
    sentences = cxrprep.split_sentences(report.findings)
    print("findings:", sentences)

    # 2. labels -> a prompt report through the packaged template file (what `cxrprep prompts` stores)
    prompts = cxrprep.prompts_from_labels({"Cardiomegaly": 1, "Pleural Effusion": 1, "Pneumothorax": 0}, seed=1)
    print("prompt report:", prompts[0])

    # 3. a model and the preprocessing it was trained with, in one call (open_clip style)
    model, preprocess = cxrtrain.load_model(run)

    # 4. a shard split as a torch Dataset, then zero-shot classification with prompt ensembles
    images = cxrtrain.ShardImages(dataset, preprocess, split="test")
    x = [images[i][0] for i in range(min(4, len(images)))]
    classes = {
        "effusion": ["There is a pleural effusion.", "Small left pleural effusion."],
        "no effusion": ["No pleural effusion.", "The costophrenic angles are sharp."],
    }
    names, probs = cxrtrain.zero_shot(model, x, classes, preprocess)
    for i, p in enumerate(probs.tolist()):
        print(f"image {i}: " + ", ".join(f"{n} {q:.3f}" for n, q in zip(names, p)))

    # 5. embeddings for retrieval: images against report sentences
    img = cxrtrain.encode_images(model, x)
    txt = cxrtrain.encode_texts(model, sentences)
    print("image-sentence similarity:", (img @ txt.T).shape)
    return dict(sentences=sentences, prompts=prompts, names=names, probs=probs, sim=img @ txt.T)


if __name__ == "__main__":
    main(*sys.argv[1:4])
