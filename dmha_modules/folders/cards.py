"""A model folder's ``model_card.md``: task, data, metrics and configuration.

``model_card`` writes the text; ``experiment_card`` says what a training
experiment's model was trained and tested on (``recipes/train.py``, ``dmha export``).
"""

import yaml


def model_card(task, embedding, data, metrics, configuration):
    """``model_card.md`` text: task, data, metrics and configuration."""
    lines = [f"# dmha {task} model", "", "## Task", ""]
    lines.append(
        "Age group (and age in years) from speech."
        if task == "age"
        else "Speaker embeddings for verification (cosine scoring)."
    )
    lines += ["", "## Data", "", data, "", "## Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" for name, value in metrics.items()
                  if isinstance(value, (int, float))]
    else:
        lines.append("Not measured.")
    lines += ["", "## Configuration", "", f"Embedding model: `{embedding[0]}`", "", "```yaml",
              yaml.safe_dump(configuration, sort_keys=False).rstrip(), "```", "",
              "## Use", "", "```python",
              "from speechbrain.inference.classifiers import EncoderClassifier",
              'model = EncoderClassifier.from_hparams(source="<this folder>")',
              "```", ""]
    return "\n".join(lines)


def experiment_card(hparams, label_encoder, metrics):
    """``card`` of ``write_model_folder`` for a training experiment.

    The data section says what the test figures were measured on: the test
    manifest (the validation one for labels files, which have no test
    split) and, for speakers, the trial list or random pairs of held-out
    speakers (``test_metrics.json``'s ``test_manifest`` and ``trial_list``).

    Example
    -------
    >>> from speechbrain.dataio.encoder import CategoricalEncoder
    >>> encoder = CategoricalEncoder()
    >>> encoder.update_from_iterable(["id1", "id2"])
    >>> hparams = {"task": "speaker", "source": "voxceleb", "data_folder": "vox",
    ...            "manifest_folder": "out/manifests"}
    >>> metrics = {"eer": 0.1, "trials": 3, "test_manifest": "out/manifests/test.csv",
    ...            "trial_list": ["vox/veri_test2.txt"]}
    >>> print(experiment_card(hparams, encoder, metrics)["data"])
    Trained by `recipes/train.py` (source `voxceleb`) on `vox` (manifests in `out/manifests`), 2 training speakers. Test metrics: the 3 trials of the trial list `vox/veri_test2.txt` (utterances of `out/manifests/test.csv`).
    """
    # The settings of the embedding model the experiment built, not of the others.
    model_keys = {
        "dmha": ("front_end", "channels", "batch_norm", "pooling", "heads", "mask_prob"),
        "ecapa_dmha": ("ecapa_channels", "heads", "mask_prob", "with_std"),
        "ecapa": ("ecapa_channels",),
    }.get(hparams.get("embedding", "dmha"), ())
    configuration = {
        key: hparams[key]
        for key in ("embedding", *model_keys, "emb_dim", "n_mels", "crop_seconds",
                    "group_loss", "number_of_epochs", "lr", "seed")
        if key in hparams
    }
    noun = "age groups" if hparams["task"] == "age" else "training speakers"
    test = metrics.get("test_manifest")
    where = f"`{test}`" if test else "the held-out test split"
    if hparams["task"] == "age":
        tested = f"the utterances of {where}"
    elif metrics.get("trial_list"):
        files = " + ".join(f"`{path}`" for path in metrics["trial_list"])
        tested = (f"the {metrics.get('trials', 'given')} trials of the trial list {files} "
                  f"(utterances of {where})")
    else:
        tested = f"{metrics.get('trials', 'the')} random pairs of the utterances of {where}"
    data = (f"Trained by `recipes/train.py` (source `{hparams.get('source', 'kaldi')}`) on "
            f"`{hparams['data_folder']}` (manifests in `{hparams['manifest_folder']}`), "
            f"{len(label_encoder)} {noun}. Test metrics: {tested}.")
    return {"data": data, "metrics": metrics, "configuration": configuration}
