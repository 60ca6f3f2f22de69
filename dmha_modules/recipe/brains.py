"""The Brains of ``recipes/train.py``: ``DMHABrain`` (both tasks), ``AgeBrain``, ``SpeakerBrain``."""

import functools
import json
import logging
import os
from collections import defaultdict

import speechbrain as sb
import torch
from speechbrain.utils.distributed import if_main_process

from dmha_modules.age.groups import age_group
from dmha_modules.age.uncertainty import (
    calibrate_age,
    expected_calibration_error,
    interval_coverages,
    plot_reliability,
    reliability_bins,
)
from dmha_modules.io.atomic import write_atomic
from dmha_modules.nn.precision import brain_precision, fp32_features
from dmha_modules.recipe.datasets import SPLITS
from dmha_modules.inference import group_posteriors
from dmha_modules.scoring.metrics import (
    classification_metrics,
    cosine_scores,
    trial_pairs,
    verification_metrics,
)
from dmha_modules.recipe.build import manifest_path, read_manifest
from dmha_modules.folders.model_folder import AGE_CALIBRATION_FILE
from dmha_modules.io.plots import plot_confusion_matrix, plot_embeddings_pca, plot_verification_scores
from dmha_modules.recipe.training import DDPBrain

logger = logging.getLogger(__name__)


class DMHABrain(DDPBrain):
    """Trains the embedding model with a classification head: what both tasks share.

    A task's subclass says which ``target_keys`` batches carry, which stages classify, what
    to ``collect`` for the metrics, the ``stage_metrics``, the test outputs besides the
    metrics (``write_task_outputs``) and where the test figures come from
    (``test_provenance``).

    Arguments
    ---------
    label_encoders : dict
        Split name -> the ``CategoricalEncoder`` of its labels (``make_label_encoder``).
    group_loss : torch.nn.Module or None
        The loss of the classifier's scores (``build_model``).
    **brain_kwargs
        Those of ``speechbrain.Brain``.

    Example
    -------
    >>> DMHABrain.target_keys, issubclass(AgeBrain, DMHABrain)
    (('label',), True)
    """

    # Batch keys the Brain trains and measures on, besides the input.
    target_keys = ("label",)
    # Whether plot legends keep the labels' order (age groups have one, speakers not).
    ordered_labels = False

    def __init__(self, label_encoders, group_loss, **brain_kwargs):
        super().__init__(**brain_kwargs)
        brain_precision(self)  # --precision bf16 on a CPU without native bf16: fp32, said
        self.label_encoders = label_encoders
        self.group_loss = group_loss

    def make_dataloader(self, dataset, stage, ckpt_prefix="dataloader-", **loader_kwargs):
        """SpeechBrain's loader; a training one tells the lr and margin schedules its length."""
        loader = super().make_dataloader(dataset, stage, ckpt_prefix, **loader_kwargs)
        if stage == sb.Stage.TRAIN:
            steps = len(loader) // self.grad_accumulation_factor
            self.hparams.lr_annealing.steps_per_epoch = max(1, steps)
            if hasattr(self.group_loss, "steps_per_epoch"):
                self.group_loss.steps_per_epoch = max(1, len(loader))
        return loader

    def on_fit_batch_start(self, batch, should_step):
        """Sets the learning rate of the optimizer step this batch ends in."""
        if should_step:
            self.hparams.lr_annealing(self.optimizer)

    def compute_forward(self, batch, stage):
        """Waveforms -> features -> embeddings -> class scores (and ages in years)."""
        batch = batch.to(self.device)
        with fp32_features(self.device):  # also under --precision bf16 (nn.precision)
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
        if "gender_head" in self.modules:
            outputs["gender"] = self.modules.gender_head(embeddings)[:, 0]
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
            self.collected["ids"].extend(batch.id)
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

    def stage_metrics(self, collected, stage):
        """The metrics of a valid or test stage from what ``collect`` kept."""
        raise NotImplementedError

    def write_task_outputs(self, metrics, collected):
        """The task's test outputs besides the metrics (its plot of the test scores)."""
        raise NotImplementedError

    def test_provenance(self):
        """What the test figures were measured on, for ``test_metrics.json`` and the model card."""
        return {"test_manifest": os.path.abspath(
            manifest_path(self.hparams.manifest_folder, "test"))}

    def on_stage_start(self, stage, epoch=None):
        """Resets what the metrics are computed from."""
        if stage != sb.Stage.TRAIN:
            self.collected = defaultdict(list)

    def concatenated(self):
        """What ``collect`` kept, each key's batches in one tensor (ids a list)."""
        return {
            key: values if key == "ids" else torch.cat(values)
            for key, values in self.collected.items()
        }

    def predict_split(self, dataset, loader_kwargs):
        """What ``collect`` keeps of one pass over ``dataset`` (valid stage, no metrics)."""
        loader = self.make_dataloader(dataset, sb.Stage.VALID, ckpt_prefix=None, **loader_kwargs)
        self.on_stage_start(sb.Stage.VALID)
        self.modules.eval()
        with torch.no_grad():
            for batch in loader:
                predictions = self.compute_forward(batch, sb.Stage.VALID)
                self.compute_objectives(predictions, batch, sb.Stage.VALID)
        return self.concatenated()

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, checkpoints the best model, writes test outputs."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        collected = self.concatenated()
        metrics = self.stage_metrics(collected, stage)
        stats = {"loss": stage_loss, **{k: v for k, v in metrics.items() if k != "confusion"}}
        key = self.hparams.selection_metric
        if stage == sb.Stage.VALID:
            selected = epoch if key == "epoch" else metrics[key]  # "epoch": keep the last
            # The early stopper minimises: negate metrics to maximise.
            sign = -1 if self.hparams.selection_direction == "max" else 1
            self.hparams.epoch_counter.update_metric(sign * selected)
            self.hparams.train_logger.log_stats(
                stats_meta={"epoch": epoch, "lr": self.optimizer.param_groups[0]["lr"]},
                train_stats={"loss": self.train_loss},
                valid_stats=stats,
            )
            keep = {"max_keys": [key]} if sign < 0 else {"min_keys": [key]}
            self.checkpointer.save_and_keep_only(meta={key: selected},
                                                 num_to_keep=self.hparams.keep_best, **keep)
        elif stage == sb.Stage.TEST:
            self.hparams.train_logger.log_stats(
                stats_meta={"Epoch loaded": self.hparams.epoch_counter.current},
                test_stats=stats,
            )
            metrics.update(self.test_provenance())
            self.test_metrics = {k: v for k, v in metrics.items() if k != "confusion"}
            if if_main_process():
                self.write_test_outputs(metrics, collected)

    def write_test_outputs(self, metrics, collected):
        """Test metrics as JSON, the task's outputs and the embeddings coloured by label."""
        folder = self.hparams.output_folder
        write_atomic(
            os.path.join(folder, "test_metrics.json"), lambda f: json.dump(metrics, f, indent=2)
        )
        self.write_task_outputs(metrics, collected)
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
    """Age groups, years and gender: macro-F1, balanced accuracy, accuracy, MAE in years.

    The years loss (weighted by ``years_loss_weight``) is added to the group loss when the
    model has a years head, and the gender cross-entropy (weighted by
    ``gender_loss_weight``; rows without a gender left out) when it has a gender head.
    Without ages in years in the manifests (Common Voice, labels files) only the groups are
    trained and measured. ``calibrate`` fits the temperature and the age intervals on the
    validation speakers (:mod:`dmha_modules.age.uncertainty`); the test metrics then add the
    expected calibration errors and the intervals' coverage. The test outputs add a
    confusion matrix and a reliability diagram.

    Arguments
    ---------
    age_decoding : dict
        From ``build_model``: ``group_posteriors`` and ``score_scale`` turn
        scores into group probabilities, ``group_centres`` (empty without
        ages) those into years, ``gender_classes`` name the gender head's.
        ``calibrate`` adds its results.
    label_encoders, group_loss, **brain_kwargs
        As ``DMHABrain``'s.

    Example
    -------
    >>> AgeBrain.ordered_labels, AgeBrain.target_keys  # years and gender keys added per model
    (True, ('label',))
    """

    ordered_labels = True

    def __init__(self, age_decoding, label_encoders, group_loss, **brain_kwargs):
        super().__init__(label_encoders, group_loss, **brain_kwargs)
        self.age_decoding = age_decoding
        self.years_known = bool(age_decoding["group_centres"])
        self.target_keys = tuple(
            ["label"] + ["age_years"] * self.years_known
            + ["gender_label"] * ("gender_classes" in age_decoding))

    def loss(self, predictions, targets, stage):
        """The group loss plus the weighted years and gender losses."""
        loss = super().loss(predictions, targets, stage)
        if "years" in predictions:
            years_loss = self.hparams.years_loss(predictions["years"], targets["age_years"])
            loss = loss + self.hparams.years_loss_weight * years_loss
        if "gender" in predictions:
            # Mean over the rows with a gender; a batch without any adds 0 (and keeps the head
            # in the graph, as DDP expects).
            genders = targets["gender_label"].reshape(-1)
            summed = torch.nn.functional.cross_entropy(
                predictions["gender"], genders, ignore_index=-1, reduction="sum")
            count = (genders >= 0).sum().clamp(min=1)
            loss = loss + self.hparams.gender_loss_weight * summed / count
        return loss

    def collect(self, predictions, targets):
        """Also keeps the group scores, predicted groups, years and genders, and the true ones."""
        super().collect(predictions, targets)
        groups, years_predicted = self.predict_age(predictions)
        self.collected["predicted"].append(groups.cpu())
        if "scores" in predictions:
            self.collected["scores"].append(predictions["scores"][:, 0].detach().float().cpu())
        if self.years_known:
            self.collected["years"].append(targets["age_years"].reshape(-1).float().cpu())
            self.collected["years_predicted"].append(years_predicted.cpu())
        if "gender" in predictions:
            self.collected["gender_predicted"].append(predictions["gender"].argmax(dim=1).cpu())
            self.collected["gender_labels"].append(targets["gender_label"].reshape(-1).cpu())

    def predict_age(self, predictions):
        """Predicted group indices and years (None without ages) from the trained heads.

        Years come from the regression head when there is one, else from the group
        posteriors weighted by the training ages' mean per group. Groups come from the
        classifier when there is one, else from the years.
        """
        years = predictions.get("years")
        if "scores" in predictions:
            posteriors = self.posteriors(predictions["scores"][:, 0])
            groups = posteriors.argmax(dim=1)
            if years is None and self.years_known:
                centres = torch.tensor(self.age_decoding["group_centres"], device=posteriors.device)
                years = posteriors @ centres
        else:
            groups = torch.tensor(
                [self.group_index(y) for y in years.tolist()], device=years.device
            )
        return groups, years

    def posteriors(self, scores, temperature=1.0):
        """Group probabilities of group scores ``(B, C)``, the scores divided by ``temperature``."""
        return group_posteriors(
            scores / temperature, ordinal=self.age_decoding["group_posteriors"] == "ordinal",
            scale=self.age_decoding["score_scale"],
        )

    def group_index(self, years):
        """Index of the age group of an age in years."""
        name = age_group(years, self.hparams.age_bins, self.hparams.age_groups)
        return self.label_encoders["train"].encode_label(name)

    @functools.cached_property
    def speakers(self):
        """Utterance ID -> speaker, over all splits (an unnamed speaker: the utterance's own)."""
        return {utterance: row.get("spk_id") or utterance for split in SPLITS
                for utterance, row in read_manifest(vars(self.hparams), split).items()}

    def calibrate(self, dataset, loader_kwargs):
        """Fits the temperature and the age intervals on ``dataset`` (the validation split).

        Run with the best checkpoint loaded; adds the results to ``age_decoding``, which the
        model folder keeps, and writes them to ``age_calibration.json`` (for ``dmha
        export``).
        """
        collected = self.predict_split(dataset, loader_kwargs)
        calibration = calibrate_age(
            collected.get("scores"), collected["labels"],
            collected["years_predicted"].tolist() if self.years_known else None,
            collected["years"].tolist() if self.years_known else None,
            [self.speakers[utterance] for utterance in collected["ids"]],
            self.hparams.interval_coverage,
            ordinal=self.age_decoding["group_posteriors"] == "ordinal",
            scale=self.age_decoding["score_scale"],
        )
        self.age_decoding.update(calibration)
        logger.info("Calibrated on the validation speakers: %s", calibration)
        if if_main_process():
            write_atomic(os.path.join(self.hparams.output_folder, AGE_CALIBRATION_FILE),
                         lambda f: json.dump(calibration, f, indent=2))

    def stage_metrics(self, collected, stage):
        """Macro-F1, balanced accuracy, accuracy, the confusion matrix, MAE in years, gender
        accuracy and, on test after ``calibrate``, calibration errors and interval coverage."""
        metrics = classification_metrics(
            collected["predicted"], collected["labels"], len(self.label_encoders["train"])
        )
        if self.years_known:
            metrics["mae_years"] = float(
                (collected["years_predicted"] - collected["years"]).abs().mean()
            )
        if "gender_predicted" in collected:
            known = collected["gender_labels"] >= 0
            metrics["gender_accuracy"] = float(
                (collected["gender_predicted"][known] == collected["gender_labels"][known])
                .float().mean()) if known.any() else None
        if stage == sb.Stage.TEST:
            metrics.update(self.calibration_metrics(collected))
        return metrics

    def calibration_metrics(self, collected):
        """Test ECE before and after the temperature, and the age intervals' coverage."""
        metrics = {}
        decoding = self.age_decoding
        if "temperature" in decoding and "scores" in collected:
            for name, temperature in (("ece", 1.0), ("ece_calibrated", decoding["temperature"])):
                metrics[name] = expected_calibration_error(
                    self.posteriors(collected["scores"], temperature), collected["labels"])
        if self.years_known:
            speakers = [self.speakers[utterance] for utterance in collected["ids"]]
            metrics.update(interval_coverages(decoding, collected["years_predicted"].tolist(),
                                              collected["years"].tolist(), speakers))
        return metrics

    def write_task_outputs(self, metrics, collected):
        """The test confusion matrix and, with group scores, the reliability diagram."""
        folder = self.hparams.output_folder
        plot_confusion_matrix(
            metrics["confusion"], self.label_names("test"),
            os.path.join(folder, "confusion_matrix.png"),
            title="Test age groups",
        )
        if "scores" in collected:
            temperatures = {"raw": 1.0}
            if "temperature" in self.age_decoding:
                temperature = self.age_decoding["temperature"]
                temperatures[f"temperature {temperature:.2f}"] = temperature
            curves = {}
            for name, temperature in temperatures.items():
                probabilities = self.posteriors(collected["scores"], temperature)
                ece = expected_calibration_error(probabilities, collected["labels"])
                curves[f"{name} (ECE {ece:.3f})"] = reliability_bins(
                    probabilities, collected["labels"])
            plot_reliability(curves, os.path.join(folder, "reliability_diagram.png"),
                             title="Test age-group probabilities")


class SpeakerBrain(DMHABrain):
    """Speaker embeddings: EER and minDCF of cosine-scored trials of held-out utterances.

    The training speakers are the classifier's classes; the valid and test utterances are
    measured on trials only: the corpus's trial list where it names the split's utterances,
    else random pairs of them (at most ``max_trials``). The test outputs add the trials'
    scores (``test_scores.txt``: ``enrol test score`` a line, manifest IDs) and their
    histogram.

    Arguments
    ---------
    trial_lists : dict
        "valid" and "test" -> ``recipe_inputs.TrialList``, or None for random pairs.
    label_encoders, group_loss, **brain_kwargs
        As ``DMHABrain``'s.

    Example
    -------
    >>> SpeakerBrain.target_keys, SpeakerBrain.ordered_labels
    (('label',), False)
    """

    def __init__(self, trial_lists, label_encoders, group_loss, **brain_kwargs):
        super().__init__(label_encoders, group_loss, **brain_kwargs)
        self.trial_lists = trial_lists

    def classifies(self, stage):
        """Only training speakers are classes."""
        return stage == sb.Stage.TRAIN

    def stage_trials(self, collected, stage):
        """``(i, j, same)`` pairs of collected utterances: the trial list's, or random ones."""
        trial_list = self.trial_lists["test" if stage == sb.Stage.TEST else "valid"]
        if trial_list is None:
            return trial_pairs(
                collected["labels"].tolist(), max_pairs=self.hparams.max_trials,
                seed=getattr(self.hparams, "split_seed", self.hparams.seed),  # older YAMLs
            )
        index = {utterance: i for i, utterance in enumerate(collected["ids"])}
        return [(index[enrol], index[test], bool(label))
                for label, enrol, test in trial_list.trials]

    def stage_metrics(self, collected, stage):
        """EER, minDCF and the number of trials; keeps the trials and scores in ``collected``."""
        pairs = self.stage_trials(collected, stage)
        scores = cosine_scores(collected["embeddings"], pairs)
        labels = torch.tensor([same for _, _, same in pairs])
        metrics = verification_metrics(scores, labels, p_target=self.hparams.p_target)
        metrics["trials"] = len(pairs)
        collected["pairs"], collected["scores"], collected["trial_labels"] = pairs, scores, labels
        return metrics

    def test_provenance(self):
        """Also the test trial list's files; None for random pairs of held-out speakers."""
        trial_list = self.trial_lists["test"]
        return {**super().test_provenance(),
                "trial_list": None if trial_list is None else trial_list.origin}

    def write_task_outputs(self, metrics, collected):
        """The test trials' scores and their histogram."""
        ids = collected["ids"]
        lines = [f"{ids[i]} {ids[j]} {score:.6f}\n"
                 for (i, j, _), score in zip(collected["pairs"], collected["scores"].tolist())]
        folder = self.hparams.output_folder
        write_atomic(os.path.join(folder, "test_scores.txt"), lambda f: f.writelines(lines))
        trial_list = metrics["trial_list"]
        plot_verification_scores(
            collected["scores"], collected["trial_labels"],
            os.path.join(folder, "verification_scores.png"),
            title="Test trials ("
            + (", ".join(map(os.path.basename, trial_list)) if trial_list else "held-out speakers")
            + ")",
            p_target=self.hparams.p_target,
        )
