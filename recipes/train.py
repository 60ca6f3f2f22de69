#!/usr/bin/env python3
"""Trains a Double Multi-Head Attention model for age groups or speakers.

One recipe, two tasks, chosen by the YAML file:

    python recipes/train.py hparams/age.yaml       # age groups (+ years)
    python recipes/train.py hparams/speaker.yaml   # speaker verification

Every setting lives in the YAML and can be overridden on the command line
(``--data_folder ...``, ``--number_of_epochs 5``, ...). Multi-process training:
``torchrun --nproc_per_node=N recipes/train.py hparams/age.yaml`` (gloo on
CPU, nccl on GPU). Rerunning the same command resumes from the last checkpoint.

Both tasks share ``DMHABrain`` (features, embeddings, classifier, checkpoint
selection); ``AgeBrain`` and ``SpeakerBrain`` say what differs: the targets,
the metrics and the test outputs.

Outputs, in ``output_folder``: ``train_log.txt``, ``test_metrics.json``,
``confusion_matrix.png`` (age) or ``verification_scores.png`` (speaker),
``embeddings_pca.png`` and ``model/`` (the best checkpoint with its
hyperparameters).
"""

import json
import os
import sys
from collections import defaultdict

import numpy as np
import soundfile
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from dmha_modules.age_groups import age_group
from dmha_modules.allocator import keep_freed_memory
from dmha_modules.atomic import write_atomic
from dmha_modules.audio import read_audio
from dmha_modules.feature_files import features_path
from dmha_modules.inference import group_posteriors
from dmha_modules.metrics import (
    classification_metrics,
    cosine_scores,
    trial_pairs,
    verification_metrics,
)
from dmha_modules.model_builder import (
    best_checkpoint_kwargs,
    build_model,
    label_key,
    make_label_encoder,
    read_manifest,
)
from dmha_modules.model_folder import write_experiment_model
from dmha_modules.plots import (
    plot_confusion_matrix,
    plot_embeddings_pca,
    plot_verification_scores,
)
from dmha_modules.training import DDPBrain, bucketed_loader_kwargs, default_ddp_backend

SPLITS = ("train", "valid", "test")


class DMHABrain(DDPBrain):
    """Trains the embedding model with a classification head: what both tasks share.

    A task's subclass says which ``target_keys`` batches carry, which stages
    classify, what to ``collect`` for the metrics, the ``stage_metrics`` and
    the test plot (``plot_test_scores``).

    Arguments
    ---------
    label_encoders : dict
        Split name -> the ``CategoricalEncoder`` of its labels
        (``make_label_encoder``).
    group_loss : torch.nn.Module or None
        The loss of the classifier's scores (``build_model``).
    **brain_kwargs
        Those of ``speechbrain.Brain``.
    """

    # Batch keys the Brain trains and measures on, besides the input.
    target_keys = ("label",)
    # Whether plot legends keep the labels' order (age groups have one, speakers not).
    ordered_labels = False

    def __init__(self, label_encoders, group_loss, **brain_kwargs):
        super().__init__(**brain_kwargs)
        self.label_encoders = label_encoders
        self.group_loss = group_loss

    def compute_forward(self, batch, stage):
        """Waveforms -> features -> embeddings -> class scores (and ages in years)."""
        batch = batch.to(self.device)
        if self.hparams.precomputed_features:
            feats, frame_lens = batch.feats
        else:
            wavs, lens = batch.sig
            if self.augmenting(stage):
                wavs, lens = self.hparams.wav_augment(wavs, lens)
            frame_lens = self.modules.compute_features.frame_lengths(lens, wavs.shape[1])
            feats = self.modules.compute_features(wavs, lens)
        feats = self.modules.mean_var_norm(feats, frame_lens)
        embeddings = self.modules.embedding_model(feats, frame_lens)
        outputs = {"embeddings": embeddings}
        if "classifier" in self.modules:
            outputs["scores"] = self.modules.classifier(embeddings)
        if "age_head" in self.modules:
            outputs["years"] = self.modules.age_head(embeddings)
        return outputs

    def augmenting(self, stage):
        """Whether waveforms are augmented: in training, from audio, when configured."""
        return (
            stage == sb.Stage.TRAIN
            and self.hparams.wav_augment is not None
            and not self.hparams.precomputed_features
        )

    def compute_objectives(self, predictions, batch, stage):
        """The loss; outside training, also keeps what the stage-end metrics need."""
        targets = {name: getattr(batch, name).data for name in self.target_keys}
        if self.augmenting(stage):
            # One target per waveform, as the augmentation replicated them.
            targets = {
                name: self.hparams.wav_augment.replicate_labels(value)
                for name, value in targets.items()
            }
        loss = self.loss(predictions, targets, stage)
        if stage != sb.Stage.TRAIN:
            self.collect(predictions, targets)
        return loss

    def loss(self, predictions, targets, stage):
        """The group (or speaker) loss, in the stages whose labels are classes."""
        loss = torch.zeros((), device=self.device)
        if "scores" in predictions and self.classifies(stage):
            # (B, C) scores and (B,) targets, so torch's own losses fit as well.
            scores = predictions["scores"][:, 0]
            loss = loss + self.group_loss(scores, targets["label"].reshape(-1))
        return loss

    def classifies(self, stage):
        """Whether the labels of ``stage`` are classifier classes."""
        return True

    def collect(self, predictions, targets):
        """Keeps what the stage-end metrics need."""
        self.collected["labels"].append(targets["label"].reshape(-1).cpu())
        self.collected["embeddings"].append(predictions["embeddings"][:, 0].detach().cpu())

    def stage_metrics(self, collected):
        """The metrics of a valid or test stage from what ``collect`` kept."""
        raise NotImplementedError

    def plot_test_scores(self, metrics, collected):
        """The task's plot of the test scores."""
        raise NotImplementedError

    def on_stage_start(self, stage, epoch=None):
        """Resets what the metrics are computed from."""
        if stage != sb.Stage.TRAIN:
            self.collected = defaultdict(list)

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals the learning rate, checkpoints the best model, writes test outputs."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        collected = {key: torch.cat(values) for key, values in self.collected.items()}
        metrics = self.stage_metrics(collected)
        stats = {"loss": stage_loss, **{k: v for k, v in metrics.items() if k != "confusion"}}
        key = self.hparams.selection_metric
        if stage == sb.Stage.VALID:
            # The scheduler and the stopper minimise: negate metrics to maximise.
            sign = -1 if self.hparams.selection_direction == "max" else 1
            old_lr, new_lr = self.hparams.lr_annealing(
                [self.optimizer], epoch, sign * metrics[key]
            )
            sb.nnet.schedulers.update_learning_rate(self.optimizer, new_lr)
            self.hparams.epoch_counter.update_metric(sign * metrics[key])
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": old_lr},
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
            keep = {"max_keys": [key]} if sign < 0 else {"min_keys": [key]}
            self.checkpointer.save_and_keep_only(
                meta={key: metrics[key]}, num_to_keep=self.hparams.keep_best, **keep
            )
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            self.test_metrics = {k: v for k, v in metrics.items() if k != "confusion"}
            if if_main_process():
                self.write_test_outputs(metrics, collected)

    def write_test_outputs(self, metrics, collected):
        """Test metrics as JSON, the task's plot and the embeddings coloured by label."""
        folder = self.hparams.output_folder
        write_atomic(
            os.path.join(folder, "test_metrics.json"), lambda f: json.dump(metrics, f, indent=2)
        )
        self.plot_test_scores(metrics, collected)
        names = self.label_names("test")
        plot_embeddings_pca(
            collected["embeddings"],
            [names[i] for i in collected["labels"].tolist()],
            os.path.join(folder, "embeddings_pca.png"),
            title="Test embeddings",
            label_order=names if self.ordered_labels else None,
        )

    def label_names(self, split):
        """The names of the labels of ``split``, in index order."""
        encoder = self.label_encoders[split]
        return [encoder.decode_ndim(i) for i in range(len(encoder))]


class AgeBrain(DMHABrain):
    """Age groups and years: macro-F1, balanced accuracy, accuracy and MAE in years.

    The years loss (weighted by ``years_loss_weight``) is added to the group
    loss when the model has a years head. The test outputs add a confusion
    matrix.

    Arguments
    ---------
    age_decoding : dict
        From ``build_model``: ``group_posteriors`` and ``score_scale`` turn
        scores into group probabilities, ``group_centres`` those into years.
    label_encoders, group_loss, **brain_kwargs
        As ``DMHABrain``'s.
    """

    target_keys = ("label", "age_years")
    ordered_labels = True

    def __init__(self, age_decoding, label_encoders, group_loss, **brain_kwargs):
        super().__init__(label_encoders, group_loss, **brain_kwargs)
        self.age_decoding = age_decoding

    def loss(self, predictions, targets, stage):
        """The group loss plus the weighted years loss."""
        loss = super().loss(predictions, targets, stage)
        if "years" in predictions:
            loss = loss + self.hparams.years_loss_weight * self.hparams.years_loss(
                predictions["years"], targets["age_years"]
            )
        return loss

    def collect(self, predictions, targets):
        """Also keeps the predicted groups and the true and predicted years."""
        super().collect(predictions, targets)
        groups, years_predicted = self.predict_age(predictions)
        self.collected["predicted"].append(groups.cpu())
        self.collected["years"].append(targets["age_years"].reshape(-1).float().cpu())
        self.collected["years_predicted"].append(years_predicted.cpu())

    def predict_age(self, predictions):
        """Predicted group indices and years from the heads that were trained.

        Years come from the regression head when there is one, else from the
        group posteriors weighted by the training ages' mean per group. Groups
        come from the classifier when there is one, else from the years.
        """
        years = predictions.get("years")
        if "scores" in predictions:
            posteriors = group_posteriors(
                predictions["scores"][:, 0],
                ordinal=self.age_decoding["group_posteriors"] == "ordinal",
                scale=self.age_decoding["score_scale"],
            )
            groups = posteriors.argmax(dim=1)
            if years is None:
                centres = torch.tensor(self.age_decoding["group_centres"], device=posteriors.device)
                years = posteriors @ centres
        else:
            groups = torch.tensor(
                [self.group_index(y) for y in years.tolist()], device=years.device
            )
        return groups, years

    def group_index(self, years):
        """Index of the age group of an age in years."""
        name = age_group(years, self.hparams.age_bins, self.hparams.age_groups)
        return self.label_encoders["train"].encode_label(name)

    def stage_metrics(self, collected):
        """Macro-F1, balanced accuracy, accuracy, the confusion matrix and MAE in years."""
        metrics = classification_metrics(
            collected["predicted"], collected["labels"], len(self.label_encoders["train"])
        )
        metrics["mae_years"] = float(
            (collected["years_predicted"] - collected["years"]).abs().mean()
        )
        return metrics

    def plot_test_scores(self, metrics, collected):
        """The test confusion matrix."""
        plot_confusion_matrix(
            metrics["confusion"], self.label_names("test"),
            os.path.join(self.hparams.output_folder, "confusion_matrix.png"),
            title="Test age groups",
        )


class SpeakerBrain(DMHABrain):
    """Speaker embeddings: EER and minDCF of cosine-scored trials of held-out speakers.

    The training speakers are the classifier's classes; the valid and test
    speakers are held out, so those stages are measured on trials only.
    The test outputs add the trial scores' histogram.

    Arguments are those of ``DMHABrain``.
    """

    def classifies(self, stage):
        """Only training speakers are classes."""
        return stage == sb.Stage.TRAIN

    def stage_metrics(self, collected):
        """EER, minDCF and the number of trials; keeps the trials' scores in ``collected``."""
        pairs = trial_pairs(
            collected["labels"].tolist(), max_pairs=self.hparams.max_trials, seed=self.hparams.seed
        )
        scores = cosine_scores(collected["embeddings"], pairs)
        labels = torch.tensor([same for _, _, same in pairs])
        metrics = verification_metrics(scores, labels, p_target=self.hparams.p_target)
        metrics["trials"] = len(pairs)
        collected["scores"], collected["trial_labels"] = scores, labels
        return metrics

    def plot_test_scores(self, metrics, collected):
        """The test trials' score histogram."""
        plot_verification_scores(
            collected["scores"], collected["trial_labels"],
            os.path.join(self.hparams.output_folder, "verification_scores.png"),
            title="Test trials (held-out speakers)",
            p_target=self.hparams.p_target,
        )


def dataio_prep(hparams, label_encoders, target_keys):
    """Datasets of the train / valid / test manifests with their input and target pipelines.

    Arguments
    ---------
    hparams : dict
        The experiment's hyperparameters.
    label_encoders : dict
        Split name -> the encoder of its labels.
    target_keys : tuple of str
        The Brain's: ``label`` and, for age, ``age_years``.

    Returns
    -------
    dict
        Split name -> ``DynamicItemDataset``.
    """
    crop = hparams["crop_seconds"]
    rate = hparams["sample_rate"]

    def make_audio_pipeline(random_crop):
        @sb.utils.data_pipeline.takes("wav", "duration")
        @sb.utils.data_pipeline.provides("sig")
        def audio_pipeline(wav, duration):
            if random_crop and duration > crop:
                info = soundfile.info(wav)
                length = int(crop * info.samplerate)
                start = int(torch.randint(0, info.frames - length + 1, ()).item())
                return read_audio(wav, rate, start, start + length)[0]
            return read_audio(wav, rate)[0]

        return audio_pipeline

    def make_features_pipeline(random_crop):
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

    def make_label_pipeline(encoder):
        @sb.utils.data_pipeline.takes(label_key(hparams))
        @sb.utils.data_pipeline.provides("label")
        def label_pipeline(label):
            return torch.LongTensor([encoder.encode_label(label)])

        return label_pipeline

    @sb.utils.data_pipeline.takes("age")
    @sb.utils.data_pipeline.provides("age_years")
    def years_pipeline(age):
        return torch.tensor([float(age)])

    if hparams["precomputed_features"]:
        make_input_pipeline, input_key = make_features_pipeline, "feats"
    else:
        make_input_pipeline, input_key = make_audio_pipeline, "sig"
    datasets = {}
    for split in SPLITS:
        dataset = sb.dataio.dataset.DynamicItemDataset(read_manifest(hparams, split))
        dataset.add_dynamic_item(make_input_pipeline(split == "train"))
        dataset.add_dynamic_item(make_label_pipeline(label_encoders[split]))
        if "age_years" in target_keys:
            dataset.add_dynamic_item(years_pipeline)
        dataset.set_output_keys(["id", input_key, *target_keys])
        datasets[split] = dataset
    return datasets


def main():
    """Prepares the manifests, trains, tests and writes the model folder."""
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    run_opts = default_ddp_backend(run_opts)
    keep_freed_memory()
    sb.utils.distributed.ddp_init_group(run_opts)
    with open(hparams_file, encoding="utf-8") as fin:
        hparams = load_hyperpyyaml(fin, overrides)
    sb.create_experiment_directory(
        experiment_directory=hparams["output_folder"],
        hyperparams_to_save=hparams_file,
        overrides=overrides,
    )
    run_on_main(hparams["prepare"])

    label_encoders = {split: make_label_encoder(hparams, split) for split in SPLITS}
    modules, group_loss, age_decoding = build_model(hparams, label_encoders["train"])
    brain_kwargs = {
        "modules": modules,
        "opt_class": hparams["opt_class"],
        "hparams": hparams,
        "run_opts": run_opts,
        "checkpointer": hparams["checkpointer"],
    }
    if hparams["task"] == "age":
        brain = AgeBrain(age_decoding, label_encoders, group_loss, **brain_kwargs)
    else:
        brain = SpeakerBrain(label_encoders, group_loss, **brain_kwargs)
    datasets = dataio_prep(hparams, label_encoders, brain.target_keys)

    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["train"], train=True),
        valid_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["valid"], train=False),
    )
    brain.evaluate(
        datasets["test"],
        test_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["test"], train=False),
        **best_checkpoint_kwargs(hparams),
    )
    if if_main_process() and "classifier" in brain.modules:  # a years-only model is no classifier
        # Without the DDP wrappers.
        trained = {name: getattr(mod, "module", mod) for name, mod in brain.modules.items()}
        write_experiment_model(
            hparams, trained, label_encoders["train"], age_decoding, brain.test_metrics
        )


if __name__ == "__main__":
    main()
