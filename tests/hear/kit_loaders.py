"""Read task folders with the HEAR evaluation kit's OWN loaders (heareval 2021.1.3) and print one
JSON line per task. Run in a subprocess with bow.hear.tfstub on PYTHONPATH (the kit's embedding
code imports tensorflow):  python -m tests.hear.kit_loaders TASK [TASK ...]

From the kit: predictions/task_predictions.py ``get_splits_from_metadata`` (the train / valid /
test plan it derives from split_mode and splits) and ``label_vocab_nlabels`` (pandas' read of
labelvocabulary.csv); score.py ``label_vocab_as_dict`` (every label of every split maps back to
an index), ``label_to_binary_vector`` (with the kit's multiclass rule) and ``available_scores``
(every metric exists); embeddings/task_embeddings.py ``get_dataloader_for_embedding`` at the
batch size the kit computes from sample_duration (every file opens, is 16 kHz as the kit
asserts, and batches collate: equal lengths).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def verify(task: Path) -> dict:
    from heareval.embeddings.task_embeddings import get_dataloader_for_embedding
    from heareval.predictions.task_predictions import get_splits_from_metadata, label_vocab_nlabels
    from heareval.score import available_scores, label_to_binary_vector, label_vocab_as_dict

    metadata = json.loads((task / "task_metadata.json").read_text())
    plan = get_splits_from_metadata(metadata)
    vocab, nlabels = label_vocab_nlabels(task)
    label_to_idx = label_vocab_as_dict(vocab, key="label", value="idx")
    unknown = [m for m in metadata["evaluation"] if m not in available_scores]

    class Embedding:              # what get_dataloader_for_embedding reads from the kit's one
        type = "torch"
        sample_rate = 16000

    seconds = metadata["sample_duration"]
    batch = 1 if seconds is None else max(1, int(0.7 * (120 / seconds)))   # the kit's rule
    clips, lengths = {}, set()
    for split in metadata["splits"]:
        data = json.loads((task / f"{split}.json").read_text())
        for labels in data.values():
            idx = [label_to_idx[str(label)] for label in labels]
            assert metadata["prediction_type"] != "multiclass" or len(idx) == 1
            label_to_binary_vector(idx, nlabels)
        n = 0
        loader = get_dataloader_for_embedding(data, task / "16000" / split, Embedding(),
                                              batch_size=batch)
        for audio, names in loader:
            assert audio.ndim == 2 and audio.dtype.is_floating_point
            lengths.add(int(audio.shape[1]))
            n += len(names)
        clips[split] = n
    return {"task": task.name, "plan": plan, "nlabels": nlabels, "clips": clips,
            "batch_size": batch, "lengths": sorted(lengths), "unknown_metrics": unknown}


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        sys.stdout.write(json.dumps(verify(Path(arg))) + "\n")
