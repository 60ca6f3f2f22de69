"""The datasets ``recipes/train.py`` trains on: manifests with their input and target pipelines.

Inputs are waveforms (randomly cropped to ``crop_seconds`` in training) or,
with ``precomputed_features``, the ``.npy`` files of ``dmha features``
(memory-mapped, cropped alike); targets are the class index (``label``) and,
for age models, ``age_years`` and ``gender_label``.
"""

import functools

import numpy as np
import speechbrain as sb
import torch

from dmha_modules.io.audio import audio_info, read_audio
from dmha_modules.io.feature_files import features_path
from dmha_modules.recipe.build import label_key, read_manifest

SPLITS = ("train", "valid", "test")


def dataio_prep(hparams, label_encoders, target_keys, gender_classes=None):
    """Datasets of the train / valid / test manifests with their input and target pipelines.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.
    label_encoders : dict
        Split name -> the encoder of its labels.
    target_keys : tuple of str
        The Brain's: ``label`` and, for age, ``age_years`` and ``gender_label``.
    gender_classes : list of str, optional
        The gender head's classes (``gender_label`` -1 for other values).

    Returns
    -------
    dict
        Split name -> ``DynamicItemDataset``.
    """
    crop = hparams["crop_seconds"]
    rate = hparams["sample_rate"]
    years_pipeline = _years_pipeline()
    gender_pipeline = _gender_pipeline(gender_classes)
    if hparams["precomputed_features"]:
        make_input_pipeline = functools.partial(_features_pipeline, hparams, crop)
        input_key = "feats"
    else:
        make_input_pipeline = functools.partial(_audio_pipeline, crop, rate)
        input_key = "sig"
    datasets = {}
    for split in SPLITS:
        dataset = sb.dataio.dataset.DynamicItemDataset(read_manifest(hparams, split))
        dataset.add_dynamic_item(make_input_pipeline(split == "train"))
        dataset.add_dynamic_item(_label_pipeline(hparams, label_encoders[split]))
        if "age_years" in target_keys:
            dataset.add_dynamic_item(years_pipeline)
        if "gender_label" in target_keys:
            dataset.add_dynamic_item(gender_pipeline)
        dataset.set_output_keys(["id", input_key, *target_keys])
        datasets[split] = dataset
    return datasets


def _audio_pipeline(crop, rate, random_crop):
    """The ``sig`` pipeline: waveforms at ``rate``, randomly cropped to ``crop`` s if ``random_crop``."""
    @sb.utils.data_pipeline.takes("wav", "duration")
    @sb.utils.data_pipeline.provides("sig")
    def audio_pipeline(wav, duration):
        if random_crop and duration > crop:
            info = audio_info(wav)
            length = int(crop * info.samplerate)
            start = int(torch.randint(0, info.frames - length + 1, ()).item())
            return read_audio(wav, rate, start, start + length)[0]
        return read_audio(wav, rate)[0]

    return audio_pipeline


def _features_pipeline(hparams, crop, random_crop):
    """The ``feats`` pipeline: ``dmha features`` files, randomly cropped to ``crop`` s if ``random_crop``."""
    @sb.utils.data_pipeline.takes("wav")
    @sb.utils.data_pipeline.provides("feats")
    def features_pipeline(wav):
        # Memory-mapped, so a crop reads only its frames.
        path = features_path(wav, hparams["features_folder"], hparams["data_folder"])
        feats = np.load(path, mmap_mode="r")
        frames = int(crop * 1000 / hparams["hop_length_ms"])
        if random_crop and len(feats) > frames:
            start = int(torch.randint(0, len(feats) - frames + 1, ()).item())
            feats = feats[start : start + frames]
        return torch.from_numpy(np.array(feats, dtype=np.float32))

    return features_pipeline


def _label_pipeline(hparams, encoder):
    """The ``label`` pipeline: the class index of the manifest's label under ``encoder``."""
    @sb.utils.data_pipeline.takes(label_key(hparams))
    @sb.utils.data_pipeline.provides("label")
    def label_pipeline(label):
        return torch.LongTensor([encoder.encode_label(label)])

    return label_pipeline


def _years_pipeline():
    """The ``age_years`` pipeline: the manifest's age as a float tensor."""
    @sb.utils.data_pipeline.takes("age")
    @sb.utils.data_pipeline.provides("age_years")
    def years_pipeline(age):
        return torch.tensor([float(age)])

    return years_pipeline


def _gender_pipeline(gender_classes):
    """The ``gender_label`` pipeline: the index of the manifest's gender in ``gender_classes``."""
    genders = {name: index for index, name in enumerate(gender_classes or ())}

    @sb.utils.data_pipeline.takes("gender")
    @sb.utils.data_pipeline.provides("gender_label")
    def gender_pipeline(gender):
        return torch.LongTensor([genders.get(gender, -1)])  # -1: not given

    return gender_pipeline
