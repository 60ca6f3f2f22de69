"""Using trained models: embeddings, age groups and years, files in bulk.

A model folder (``<output_folder>/model/`` of ``recipes/train.py``, or the
output of ``dmha export`` / ``dmha import-original``) loads with SpeechBrain's own
``EncoderClassifier.from_hparams(source=folder)``. The classes here load the
same folder and add what SpeechBrain's do not:

- ``DMHAClassifier``: exact padded batches (features, normalisation and
  pooling see each utterance's own frame count, where SpeechBrain passes
  waveform lengths), any sample rate and channel count in, clear errors for
  bad audio, and ``embed_files`` for files in bulk.
- ``AgeClassifier``: age group, group probabilities and age in years.

Audio handling (``load_utterance``): channels are averaged, the rate is
converted to the model's, audio shorter than ``MIN_SECONDS`` is repeated up to
it (a warning says so), long audio is processed in chunks of bounded memory
(see ``LogMelFeatures`` and ``ConvFrontEnd``). Empty, silent, truncated,
NaN-holding and non-audio files raise ``AudioError`` naming the file
(:func:`dmha_modules.io.audio.read_checked_audio`).

Loading a model folder runs what its ``hyperparams.yaml`` names, so these
classes check it first (:func:`dmha_modules.folders.safety.check_hyperparams`)
unless ``trust_model=True``, and name the folder's file that fails to load.
"""

__all__ = [
    "AgeClassifier", "AudioError", "DMHAClassifier", "NoEmbeddingNorm", "embed_files",
    "embed_waveforms", "group_posteriors", "load_utterance",
]

import os
import pickle

import torch
from speechbrain.inference.classifiers import EncoderClassifier

from dmha_modules.io.audio import AudioError
from dmha_modules.folders.safety import (
    ModelFolderError,
    check_finite,
    check_hyperparams,
    checkpoint_problems,
)
from dmha_modules.nn.embedding import (  # public here too: the classes' building blocks
    MIN_SECONDS,
    embed_files,
    embed_waveforms,
    load_utterance,
)
from dmha_modules.nn.models import with_exact_padding
from dmha_modules.nn.waveform import PassThrough, waveform_model
from dmha_modules.scoring import decisions


# Years are clipped to the training ages' range a model folder records (``years_range``);
# folders without one (imported, or written before it was recorded) to this stated range.
YEARS_RANGE = (0.0, 100.0)
# Age models are trained on 3 s crops and calibrated on whole validation utterances of a few
# seconds; taken whole, a 10-minute file got -31 years. Longer files are cut into the fewest
# equal chunks of at most this length, and their embedding is the chunks' mean.
AGE_CHUNK_SECONDS = 10.0
# Chunks embedded at once: 120 s of audio, the default --batch_seconds.
CHUNKS_PER_BATCH = 12



def group_posteriors(scores, ordinal=False, scale=1.0):
    """Age-group probabilities ``(B, C)`` from classifier scores ``(B, C)``.

    Softmax of ``scale * scores`` (``scale`` is AM-Softmax's for cosine
    classifiers, 1 for logits); for an ordinal head, the differences of the
    cumulative "at least group c" probabilities, clipped at zero and renormalised.

    Arguments
    ---------
    scores : torch.Tensor
        Classifier outputs ``(B, C)``.
    ordinal : bool
        Scores are ordinal-regression logits.
    scale : float
        Softmax scale.

    Returns
    -------
    torch.Tensor

    Example
    -------
    >>> group_posteriors(torch.tensor([[0.0, 0.0]]))
    tensor([[0.5000, 0.5000]])
    >>> group_posteriors(torch.tensor([[10.0, 0.0, -10.0]]), ordinal=True).argmax().item()
    1
    """
    if not ordinal:
        return torch.softmax(scale * scores, dim=1)
    at_least = torch.sigmoid(scores)
    above = torch.cat([at_least[:, 1:], torch.zeros_like(at_least[:, :1])], dim=1)
    posteriors = (at_least - above).clamp(min=0)
    return posteriors / posteriors.sum(dim=1, keepdim=True).clamp(min=1e-8)


class NoEmbeddingNorm(PassThrough):
    """The identity, as ``mean_var_norm_emb``.

    SpeechBrain's ``SpeakerRecognition`` requires that module; dmha models are
    trained without embedding normalisation.

    Example
    -------
    >>> NoEmbeddingNorm()(torch.ones(2, 1, 3), torch.ones(2)).shape
    torch.Size([2, 1, 3])
    """


class DMHAClassifier(EncoderClassifier):
    """SpeechBrain's ``EncoderClassifier`` with exact padded batches and checked audio.

    Loads any dmha model folder: ``DMHAClassifier.from_hparams(source=folder)``,
    refusing one whose ``hyperparams.yaml`` would run code a dmha model folder
    never runs (``UnsafeModelError``) unless ``trust_model=True``; a file
    that fails to load, or whose weights hold NaN or infinity, is named in a
    ``ModelFolderError``.

    Example
    -------
    >>> classifier = DMHAClassifier.from_hparams(source=folder)  # doctest: +SKIP
    >>> classifier.embed_file("speech.wav").shape                 # doctest: +SKIP
    torch.Size([400])
    """

    @classmethod
    def from_hparams(cls, source, hparams_file="hyperparams.yaml", overrides=None,
                     trust_model=False, **kwargs):
        """SpeechBrain's ``from_hparams`` of a local folder, checked first (see the class)."""
        path = os.path.join(source, hparams_file)
        if not os.path.isfile(path):
            raise ModelFolderError([f"{source}: not a model folder (no {hparams_file})"])
        if not trust_model:
            check_hyperparams(path, overrides)
        try:
            loaded = super().from_hparams(
                source, hparams_file=hparams_file, overrides=overrides or {}, **kwargs
            )
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
            problems = checkpoint_problems(source, error)
            raise ModelFolderError(problems) from error
        for name in loaded.mods:  # the pretrainer loads <name>.ckpt into the YAML's <name>
            checkpoint = os.path.join(source, f"{name}.ckpt")
            if os.path.exists(checkpoint):
                module = getattr(loaded.hparams, name, loaded.mods[name])
                check_finite(module.state_dict(), checkpoint)
        # Folders naming SpeechBrain's ECAPA, in either layout (dmha_modules.nn.waveform).
        with_exact_padding(waveform_model(loaded.mods).embedding_model)
        return loaded

    def encode_batch(self, wavs, wav_lens=None, normalize=False):
        """Embeddings ``(B, 1, E)`` of padded waveforms ``(B, samples)`` at the model's rate."""
        if wavs.dim() == 1:
            wavs = wavs.unsqueeze(0)
        wavs = wavs.to(self.device).float()
        if wav_lens is not None:
            wav_lens = wav_lens.to(self.device)
        embeddings = embed_waveforms(self.mods, wavs, wav_lens)
        if normalize:
            embeddings = self.mods.mean_var_norm_emb(embeddings)
        return embeddings

    def load_audio(self, path, savedir=None):
        """The checked waveform of ``path`` at the model's rate (see ``load_utterance``)."""
        return load_utterance(path, self.hparams.sample_rate)

    def embed(self, wavs, lengths):
        """Embeddings ``(B, E)`` of a padded batch: the ``embed`` of ``embed_files``."""
        return self.encode_batch(wavs, lengths)[:, 0]

    def embed_file(self, path):
        """The embedding ``(E,)`` of one audio file."""
        with torch.inference_mode():
            return self.embed(self.load_audio(path)[None], None)[0]

    def embed_files(self, paths, **kwargs):
        """``embed_files`` with this model; see that function for ``kwargs``."""
        return embed_files(self.embed, paths, self.hparams.sample_rate, **kwargs)


class AgeClassifier(DMHAClassifier):
    """Age group, group probabilities, age in years (with an interval) and gender.

    Years come from the regression head when the model has one, else from the
    group probabilities weighted by the training ages' mean of each group
    (for imported models, the group ages given at import). The group is the
    most probable one, or decided by the original code's rule for models
    imported from its ``train_ordinal.py`` (then None where that rule
    reaches no group).

    Model folders calibrated on validation speakers (``recipes/train.py``
    since the calibration, :mod:`dmha_modules.age.uncertainty`) divide the
    group scores by their ``temperature`` for the reported probabilities
    (groups and years come from the uncalibrated ones, as in training), and
    give years an interval for one utterance: ``years_interval``
    ``(low, high)`` with ``interval_coverage``; older folders give None for
    both. Models with a gender head add ``gender`` and ``gender_probability``
    (None without).

    Years are clipped to ``years_range`` (the training ages' range the
    folder records, else ``YEARS_RANGE``), and so is the interval, which
    holds them: ``low <= years <= high``. A file longer than
    ``AGE_CHUNK_SECONDS`` is cut into the fewest equal chunks of at most
    that length, each embedded as a short file, and its embedding is their
    mean (the years head is linear, so its years are the chunks' mean years).

    Example
    -------
    >>> ages = AgeClassifier.from_hparams(source=folder)  # doctest: +SKIP
    >>> ages.classify_age_file("speech.wav")               # doctest: +SKIP
    {'group': 'twenties', 'probabilities': {'child': 0.02, ...}, 'years': 24.3,
     'years_interval': (17.1, 31.5), 'interval_coverage': 0.8, 'gender': 'f',
     'gender_probability': 0.93}
    """

    @property
    def groups(self):
        """Age group names in class order."""
        encoder = self.hparams.label_encoder
        return [encoder.ind2lab[i] for i in range(len(encoder))]

    @property
    def years_range(self):
        """``(low, high)`` that years are clipped to (see the class)."""
        return tuple(getattr(self.hparams, "years_range", None) or YEARS_RANGE)

    @property
    def interval_half_width(self):
        """Half-width in years of one utterance's interval; None when not calibrated."""
        return getattr(self.hparams, "utterance_interval_half_width_years", None)

    def age_from_embeddings(self, embeddings):
        """Groups, probabilities ``(B, C)``, years ``(B,)`` and genders of embeddings ``(B, E)``.

        Returns
        -------
        dict
            ``groups`` (list of names), ``probabilities`` (calibrated when the
            folder is) and ``years`` (tensors; ``years`` None for models
            without ages in years); ``genders`` (list of names) and
            ``gender_probabilities`` ``(B,)`` for models with a gender head.
        """
        embeddings = embeddings.to(self.device).reshape(len(embeddings), 1, -1)
        scores = self.mods.classifier(embeddings)[:, 0]
        ordinal = self.hparams.group_posteriors == "ordinal"
        probabilities = group_posteriors(scores, ordinal, self.hparams.score_scale)
        years = None  # a model trained without ages in years (Common Voice, labels files)
        if "age_head" in self.mods:
            years = self.mods.age_head(embeddings).cpu()
        elif self.hparams.group_centres:
            centres = torch.tensor(self.hparams.group_centres, device=probabilities.device)
            years = (probabilities @ centres).cpu()
        if years is not None:
            years = years.clamp(*self.years_range)
        age = {
            "groups": [self.groups[i] if i >= 0 else None for i in self.decide(scores, probabilities)],
            "probabilities": group_posteriors(
                scores / getattr(self.hparams, "temperature", 1.0), ordinal,
                self.hparams.score_scale).cpu(),
            "years": years,
        }
        if "gender_head" in self.mods:
            genders = torch.softmax(self.mods.gender_head(embeddings)[:, 0], dim=1).cpu()
            age["gender_probabilities"], indices = genders.max(dim=1)
            age["genders"] = [self.hparams.gender_classes[i] for i in indices.tolist()]
        return age

    def decide(self, scores, probabilities):
        """Group indices: the most probable group, or the folder's ``decision`` rule.

        Folders imported from the original code's ``train_ordinal.py`` say
        ``decision: ordinal``: its rule (``dmha_modules.scoring.decisions.decide``),
        which gives -1 (no group) when even the first group's sigmoid is
        below one half.
        """
        decision = getattr(self.hparams, "decision", "argmax")
        if decision == "argmax":
            return probabilities.argmax(dim=1).tolist()
        return decisions.decide(scores, decision).tolist()

    def embed(self, wavs, lengths):
        """Embeddings ``(B, E)`` of a padded batch, long files by chunks (see the class)."""
        longest = int(AGE_CHUNK_SECONDS * self.hparams.sample_rate)
        lengths = torch.ones(len(wavs)) if lengths is None else lengths.cpu()
        samples = (lengths * wavs.shape[1]).round().long().tolist()
        whole = super().embed
        if max(samples) <= longest:
            return whole(wavs, lengths)
        embeddings = [None] * len(wavs)
        short = [i for i, n in enumerate(samples) if n <= longest]
        if short:
            width = max(samples[i] for i in short)
            relative = torch.tensor([samples[i] / width for i in short])
            for i, embedding in zip(short, whole(wavs[short, :width], relative)):
                embeddings[i] = embedding
        for i, n in enumerate(samples):
            if n > longest:
                count = -(-n // longest)
                chunks = wavs[i, : count * (n // count)].reshape(count, n // count)
                embeddings[i] = torch.cat([whole(part, None) for part in
                                           chunks.split(CHUNKS_PER_BATCH)]).mean(dim=0)
        return torch.stack(embeddings)

    def classify_age_batch(self, wavs, wav_lens=None):
        """``age_from_embeddings`` of a padded batch of waveforms at the model's rate."""
        with torch.inference_mode():
            return self.age_from_embeddings(self.embed(wavs, wav_lens))

    def age_of_embedding(self, embedding):
        """Age of one embedding ``(E,)``: ``group``, ``probabilities`` (name -> p), ``years``,
        ``years_interval``, ``interval_coverage``, ``gender``, ``gender_probability``."""
        with torch.inference_mode():
            age = self.age_from_embeddings(embedding[None])
        years = None if age["years"] is None else float(age["years"][0])
        width = self.interval_half_width
        known = years is not None and width is not None
        return {
            "group": age["groups"][0],
            "probabilities": dict(zip(self.groups, age["probabilities"][0].tolist())),
            "years": years,
            "years_interval": ((max(years - width, self.years_range[0]),
                                min(years + width, self.years_range[1])) if known else None),
            "interval_coverage": self.hparams.interval_coverage if known else None,
            "gender": age["genders"][0] if "genders" in age else None,
            "gender_probability": (float(age["gender_probabilities"][0])
                                   if "genders" in age else None),
        }

    def classify_age_file(self, path):
        """Age of one audio file, as ``age_of_embedding``."""
        return self.age_of_embedding(self.embed_file(path))

    def classify_age_files(self, paths, **kwargs):
        """Ages of files in bulk: yields ``(index, age dict or AudioError)`` as ``embed_files``."""
        for index, result in self.embed_files(paths, **kwargs):
            if isinstance(result, AudioError):
                yield index, result
            else:
                yield index, self.age_of_embedding(result)
