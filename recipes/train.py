#!/usr/bin/env python3
"""Trains a Double Multi-Head Attention model for age groups or speakers.

One recipe, two tasks, chosen by the YAML file:

    python recipes/train.py hparams/age.yaml       # age groups (+ years)
    python recipes/train.py hparams/speaker.yaml   # speaker verification

Every setting lives in the YAML and can be overridden on the command line
(``--data_folder ...``, ``--number_of_epochs 5``, ...). Multi-process training:
``torchrun --nproc_per_node=N recipes/train.py hparams/age.yaml`` (gloo on
CPU, nccl on GPU). Rerunning the same command resumes from the last checkpoint.

Outputs, in ``output_folder``: ``train_log.txt``, ``test_metrics.json``,
``confusion_matrix.png`` (age) or ``verification_scores.png`` (speaker),
``embeddings_pca.png`` and ``model/`` (the best checkpoint with its
hyperparameters).
"""

import dataclasses
import json
import os
import sys

import numpy as np
import soundfile
import speechbrain as sb
import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.distributed import if_main_process, run_on_main

from dmha_modules.audio import read_audio
from dmha_modules.data_prep import age_group, features_path
from dmha_modules.experiment import (
    build_model,
    embedding_spec,
    make_label_encoder,
    train_statistics,
)
from dmha_modules.export import experiment_card, write_model_folder
from dmha_modules.inference import embed_waveforms, group_posteriors
from dmha_modules.losses import OrdinalRegressionLoss
from dmha_modules.metrics import (
    classification_metrics,
    cosine_scores,
    trial_pairs,
    verification_metrics,
)
from dmha_modules.plots import (
    plot_confusion_matrix,
    plot_embeddings_pca,
    plot_verification_scores,
)
from dmha_modules.runtime import keep_freed_memory


class RankBatches(torch.utils.data.distributed.DistributedSampler):
    """This rank's share of the batches of ``batch_sampler``: disjoint across
    ranks, reshuffled each epoch, the remainder that does not divide evenly
    dropped. (SpeechBrain's wrapper repeats batches instead, and yields
    single ids when a rank gets one batch.)
    """

    def __init__(self, batch_sampler, rank):
        super().__init__(batch_sampler, rank=rank, shuffle=True, drop_last=True)
        self.batch_sampler = batch_sampler

    def __iter__(self):
        batches = list(self.batch_sampler)
        return (batches[i] for i in super().__iter__())

    def set_epoch(self, epoch):
        """Sets the epoch of the split and of the batch sampler."""
        super().set_epoch(epoch)
        self.batch_sampler.set_epoch(epoch)


class DMHABrain(sb.Brain):
    """Trains the embedding model with a classification head (and an age head)."""

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

    def compute_forward_embedding(self, wavs):
        """Embeddings ``(B, 1, E)`` of full-length waveforms, in eval mode."""
        self.modules.eval()
        return embed_waveforms(self.modules, wavs)

    def augmenting(self, stage):
        """Whether waveforms are augmented: in training, from audio, when configured."""
        return (
            stage == sb.Stage.TRAIN
            and self.hparams.wav_augment is not None
            and not self.hparams.precomputed_features
        )

    def compute_objectives(self, predictions, batch, stage):
        """Group (or speaker) loss plus the weighted years loss; collects metrics."""
        labels = batch.label.data
        years = batch.age_years.data if self.hparams.task == "age" else None
        if self.augmenting(stage):
            labels = self.hparams.wav_augment.replicate_labels(labels)
            if years is not None:
                years = self.hparams.wav_augment.replicate_labels(years)

        loss = torch.zeros((), device=self.device)
        # Held-out speakers are not classes: speaker validation is by trials only.
        classify = self.hparams.task == "age" or stage == sb.Stage.TRAIN
        if "scores" in predictions and classify:
            # (B, C) scores and (B,) targets, so torch's own losses fit as well.
            scores = predictions["scores"][:, 0]
            loss = loss + self.group_loss(scores, labels.reshape(-1))
        if "years" in predictions:
            loss = loss + self.hparams.years_loss_weight * self.hparams.years_loss(
                predictions["years"], years
            )

        if stage != sb.Stage.TRAIN:
            self.collect(predictions, labels, years)
        return loss

    def collect(self, predictions, labels, years):
        """Keeps what the stage-end metrics need."""
        self.collected["labels"].append(labels.reshape(-1).cpu())
        self.collected["embeddings"].append(predictions["embeddings"][:, 0].detach().cpu())
        if self.hparams.task == "age":
            groups, years_predicted = self.predict_age(predictions)
            self.collected["predicted"].append(groups.cpu())
            self.collected["years"].append(years.reshape(-1).float().cpu())
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
                ordinal=isinstance(self.group_loss, OrdinalRegressionLoss),
                scale=getattr(self.group_loss, "scale", 1.0),
            )
            groups = posteriors.argmax(dim=1)
            if years is None:
                years = posteriors @ self.group_centres.to(posteriors.device)
        else:
            groups = torch.tensor(
                [self.group_index(y) for y in years.tolist()], device=years.device
            )
        return groups, years

    def group_index(self, years):
        """Index of the age group of an age in years."""
        name = age_group(years, self.hparams.age_bins, self.hparams.age_groups)
        return self.label_encoder.encode_label(name)

    def on_stage_start(self, stage, epoch=None):
        """Resets what the metrics are computed from."""
        if stage != sb.Stage.TRAIN:
            self.collected = {
                key: []
                for key in ("labels", "embeddings", "predicted", "years", "years_predicted")
            }

    def stage_metrics(self):
        """Age: macro-F1, balanced accuracy, accuracy, MAE. Speaker: EER, minDCF."""
        cat = {key: torch.cat(value) for key, value in self.collected.items() if value}
        if self.hparams.task == "age":
            metrics = classification_metrics(
                cat["predicted"], cat["labels"], len(self.label_encoder)
            )
            metrics["mae_years"] = float((cat["years_predicted"] - cat["years"]).abs().mean())
            return metrics, cat
        pairs = trial_pairs(
            cat["labels"].tolist(), max_pairs=self.hparams.max_trials, seed=self.hparams.seed
        )
        scores = cosine_scores(cat["embeddings"], pairs)
        labels = torch.tensor([same for _, _, same in pairs])
        metrics = verification_metrics(scores, labels, p_target=self.hparams.p_target)
        metrics["trials"] = len(pairs)
        cat["scores"], cat["trial_labels"] = scores, labels
        return metrics, cat

    def on_stage_end(self, stage, stage_loss, epoch=None):
        """Logs, anneals the learning rate, checkpoints the best model, writes test outputs."""
        if stage == sb.Stage.TRAIN:
            self.train_loss = stage_loss
            return
        metrics, collected = self.stage_metrics()
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
        """Test metrics as JSON, and the plots a person would look at."""
        folder = self.hparams.output_folder
        tmp = os.path.join(folder, "test_metrics.json.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(metrics, f, indent=2)
        os.replace(tmp, os.path.join(folder, "test_metrics.json"))
        names = [self.label_encoder.decode_ndim(i) for i in range(len(self.label_encoder))]
        if self.hparams.task == "age":
            plot_confusion_matrix(
                metrics["confusion"], names, os.path.join(folder, "confusion_matrix.png"),
                title="Test age groups",
            )
            colour_by = [names[i] for i in collected["labels"].tolist()]
            order = names
        else:
            plot_verification_scores(
                collected["scores"], collected["trial_labels"],
                os.path.join(folder, "verification_scores.png"),
                title="Test trials (held-out speakers)",
                p_target=self.hparams.p_target,
            )
            colour_by = [self.speakers["test"][i] for i in collected["labels"].tolist()]
            order = None
        plot_embeddings_pca(
            collected["embeddings"], colour_by, os.path.join(folder, "embeddings_pca.png"),
            title="Test embeddings", label_order=order,
        )

    def _train_loader_specifics(self, dataset, loader_kwargs):
        """SpeechBrain's, but under DDP ranks get disjoint batches.

        SpeechBrain pads the batch list by repeating batches so that it divides
        among the ranks; here the remainder is dropped instead (the epoch's
        shuffle picks other batches to drop next time).
        """
        batch_sampler = loader_kwargs.get("batch_sampler")
        if not self.distributed_launch or batch_sampler is None:
            return super()._train_loader_specifics(dataset, loader_kwargs)
        self.train_sampler = RankBatches(batch_sampler, rank=self.rank)
        loader_kwargs["batch_sampler"] = self.train_sampler
        return loader_kwargs

    def _wrap_distributed(self):
        """DDP without SpeechBrain's SyncBatchNorm conversion on CPU, where gloo lacks it."""
        if self.distributed_launch and self.distributed_backend == "gloo":
            for name, module in self.modules.items():
                if any(p.requires_grad for p in module.parameters()):
                    self.modules[name] = torch.nn.parallel.DistributedDataParallel(
                        module, find_unused_parameters=self.find_unused_parameters
                    )
            return
        super()._wrap_distributed()


def dataio_prep(hparams, label_encoder):
    """Datasets of the train / valid / test manifests with their audio and label pipelines.

    Labels are class indices of ``label_encoder``, except the held-out speakers
    of the speaker task's valid and test splits, numbered within their split
    (returned as ``speakers``) since they only make trials.
    """
    crop = hparams["crop_seconds"]
    rate = hparams["sample_rate"]
    label_key = "age_group" if hparams["task"] == "age" else "spk_id"
    datasets = {}
    for split in ("train", "valid", "test"):
        datasets[split] = sb.dataio.dataset.DynamicItemDataset.from_csv(
            csv_path=os.path.join(hparams["manifest_folder"], f"{split}.csv"),
            replacements={"data_root": hparams["data_folder"]},
        )

    def make_audio_pipeline(random_crop):
        @sb.utils.data_pipeline.takes("wav", "duration")
        @sb.utils.data_pipeline.provides("sig")
        def audio_pipeline(wav, duration):
            duration = float(duration)
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

    def make_label_pipeline(index):
        @sb.utils.data_pipeline.takes(label_key)
        @sb.utils.data_pipeline.provides("label")
        def label_pipeline(label):
            return torch.LongTensor([index(label)])

        return label_pipeline

    speakers = {}
    if hparams["precomputed_features"]:
        make_input_pipeline, outputs = make_features_pipeline, ["id", "feats", "label"]
    else:
        make_input_pipeline, outputs = make_audio_pipeline, ["id", "sig", "label"]
    for split, dataset in datasets.items():
        dataset.add_dynamic_item(make_input_pipeline(split == "train"))
        if hparams["task"] == "speaker" and split != "train":
            with dataset.output_keys_as(["spk_id"]):
                speakers[split] = sorted({item["spk_id"] for item in dataset})
            dataset.add_dynamic_item(make_label_pipeline(speakers[split].index))
        else:
            dataset.add_dynamic_item(make_label_pipeline(label_encoder.encode_label))
        if hparams["task"] == "age":
            dataset.add_dynamic_item(
                lambda age: torch.tensor([float(age)]), takes="age", provides="age_years"
            )
    if hparams["task"] == "age":
        outputs.append("age_years")
    sb.dataio.dataset.set_output_keys(list(datasets.values()), outputs)
    return datasets, speakers


def bucketed_loader_kwargs(hparams, dataset, train):
    """Length-bucketed batches (SpeechBrain's DynamicBatchSampler) so padding stays small.

    Bucket edges are quantiles of the actual lengths (training crops count as
    ``crop_seconds``), so every bucket holds data and batches fill up to
    ``max_batch_seconds``.
    """
    crop = hparams["crop_seconds"]
    lengths = [float(row["duration"]) for row in dataset.data.values()]
    if train:
        lengths = [min(length, crop) for length in lengths]
    quantiles = np.linspace(0, 1, hparams["num_buckets"] + 1)[1:]
    boundaries = sorted(set(np.quantile(lengths, quantiles).round(3).tolist()))
    sampler = sb.dataio.sampler.DynamicBatchSampler(
        dataset,
        max_batch_length=hparams["max_batch_seconds"],
        bucket_boundaries=boundaries,
        lengths_list=lengths,
        shuffle=train,
        batch_ordering="random" if train else "descending",
        seed=hparams["seed"],
    )
    return {"batch_sampler": sampler, "num_workers": hparams["num_workers"]}


def main():
    hparams_file, run_opts, overrides = sb.parse_arguments(sys.argv[1:])
    if not torch.cuda.is_available() and "distributed_backend" not in run_opts.overridden_args:
        # nccl needs GPUs. Brain only reads the options marked as given.
        run_opts = dataclasses.replace(
            run_opts,
            distributed_backend="gloo",
            overridden_args=run_opts.overridden_args | {"distributed_backend"},
        )
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

    label_encoder = make_label_encoder(hparams)
    datasets, speakers = dataio_prep(hparams, label_encoder)
    counts, ages = train_statistics(datasets["train"].data.values(), hparams, label_encoder)
    modules, group_loss, age_decoding = build_model(hparams, label_encoder, counts, ages)

    brain = DMHABrain(
        modules=modules,
        opt_class=hparams["opt_class"],
        hparams=hparams,
        run_opts=run_opts,
        checkpointer=hparams["checkpointer"],
    )
    brain.label_encoder = label_encoder
    brain.group_loss = group_loss
    brain.speakers = speakers
    if age_decoding is not None:
        brain.group_centres = torch.tensor(age_decoding["group_centres"])

    brain.fit(
        brain.hparams.epoch_counter,
        datasets["train"],
        datasets["valid"],
        train_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["train"], train=True),
        valid_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["valid"], train=False),
    )
    key = hparams["selection_metric"]
    best = {"max_key": key} if hparams["selection_direction"] == "max" else {"min_key": key}
    brain.evaluate(
        datasets["test"],
        test_loader_kwargs=bucketed_loader_kwargs(hparams, datasets["test"], train=False),
        **best,
    )
    if if_main_process() and "classifier" in brain.modules:  # a years-only model is no classifier
        write_model_folder(
            os.path.join(hparams["output_folder"], "model"),
            {name: getattr(module, "module", module) for name, module in brain.modules.items()},
            embedding_spec(hparams),
            label_encoder,
            read_audio(next(iter(datasets["test"].data.values()))["wav"], hparams["sample_rate"])[0],
            task=hparams["task"],
            age_decoding=age_decoding,
            verification_threshold=brain.test_metrics.get("eer_threshold"),
            card=experiment_card(hparams, label_encoder, brain.test_metrics),
            extra_files=[(os.path.join(hparams["output_folder"], "hyperparams.yaml"),
                          "train_hyperparams.yaml")],
        )


if __name__ == "__main__":
    main()
