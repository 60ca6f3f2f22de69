"""Log-mel features of the original research code ("MFSC"), batched in torch.

The recipe (see ``docs/original-model.md``, "Features"): scale to the 16-bit range, pre-emphasis
0.97, 25 ms Hamming windows every 10 ms without centring, magnitude spectrum,
80 Slaney mel filters without normalisation, ``log(max(1, mel))``; then per
utterance mean (and optionally variance) normalisation.

Unlike the original, everything here runs on batches of padded waveforms on any
device, and normalisation only looks at the frames of each utterance, so an
utterance gives the same features alone or padded inside a batch.
"""

import torch
import torchaudio

from dmha_modules.nn.masks import frame_mask

FRAMINGS = ("window", "original")


class LogMelFeatures(torch.nn.Module):
    """Log-mel filterbank features, as the original code computed them.

    Two framings (neither centres the first frame on sample 0):

    - ``"window"`` (the default): frame ``t`` is the ``win_length`` samples
      from ``t * hop_length``; ``1 + (n - win_length) // hop_length`` frames.
    - ``"original"``: exactly ``librosa.stft(center=False)`` as the original
      code called it: frame ``t`` reads the ``n_fft`` samples from
      ``t * hop_length`` with the window zero-padded to ``n_fft`` and centred
      in them, so the window starts ``(n_fft - win_length) // 2`` samples in
      (56 at 16 kHz, 156 at 8 kHz); ``1 + (n - n_fft) // hop_length`` frames.
      Models trained by the original code expect this one.

    The two coincide when the window fills the FFT (above 20.48 kHz, where the
    original could not run). Frames past the end of an utterance (padding,
    as given by ``lengths``) are set to zero.

    Arguments
    ---------
    sample_rate : int
        Sample rate of the input waveforms, in Hz.
    n_mels : int
        Number of mel filters.
    n_fft : int
        FFT size; raised to ``win_length`` when the window is longer
        (sample rates above 20.48 kHz).
    win_length_ms : float
        Window length in milliseconds.
    hop_length_ms : float
        Hop between frames in milliseconds.
    preemphasis : float
        Pre-emphasis coefficient.
    chunk_frames : int, optional
        Frames computed at a time, so that an hour of audio needs memory for
        its features but not for its spectra; None computes all at once
        (for ONNX export). Frames are independent, so the result is the same.
    framing : str
        ``"window"`` or ``"original"`` (see above).

    Example
    -------
    >>> compute_features = LogMelFeatures(sample_rate=16000)
    >>> wavs = torch.rand(2, 16000) - 0.5
    >>> compute_features(wavs, torch.tensor([1.0, 0.5])).shape
    torch.Size([2, 98, 80])
    >>> compute_features.frame_lengths(torch.tensor([1.0, 0.5]), 16000)
    tensor([1.0000, 0.4898])
    >>> LogMelFeatures(sample_rate=16000, framing="original")(wavs).shape
    torch.Size([2, 97, 80])
    """

    def __init__(
        self,
        sample_rate=16000,
        n_mels=80,
        n_fft=512,
        win_length_ms=25.0,
        hop_length_ms=10.0,
        preemphasis=0.97,
        chunk_frames=6000,
        framing="window",
    ):
        super().__init__()
        if framing not in FRAMINGS:
            raise ValueError(f"Unknown framing {framing!r}; expected one of {FRAMINGS}")
        self.sample_rate = sample_rate
        self.chunk_frames = chunk_frames
        self.framing = framing
        self.win_length = int(sample_rate * win_length_ms / 1000)
        self.hop_length = int(sample_rate * hop_length_ms / 1000)
        self.n_fft = max(n_fft, self.win_length)
        # Samples a frame spans, and where its window starts in them.
        if framing == "original":
            self.frame_length = self.n_fft
            self.window_offset = (self.n_fft - self.win_length) // 2
        else:
            self.frame_length, self.window_offset = self.win_length, 0
        self.preemphasis = preemphasis
        self.register_buffer(
            "window",
            torch.hamming_window(self.win_length, periodic=True),
            persistent=False,
        )
        mel_filters = torchaudio.functional.melscale_fbanks(
            n_freqs=self.n_fft // 2 + 1,
            f_min=0.0,
            f_max=sample_rate / 2,
            n_mels=n_mels,
            sample_rate=sample_rate,
            norm=None,
            mel_scale="slaney",
        )
        self.register_buffer("mel_filters", mel_filters, persistent=False)

    def num_frames(self, num_samples):
        """Number of frames for waveforms of ``num_samples`` samples (int or tensor)."""
        frames = 1 + (num_samples - self.frame_length) // self.hop_length
        if isinstance(frames, torch.Tensor):
            return frames.clamp(min=0)
        return max(frames, 0)

    def frame_lengths(self, lengths, num_samples):
        """Relative lengths in frames of waveforms with relative ``lengths``.

        Arguments
        ---------
        lengths : torch.Tensor
            Relative waveform lengths ``(B,)`` in [0, 1].
        num_samples : int
            Padded waveform length in samples.

        Returns
        -------
        torch.Tensor
            Relative lengths ``(B,)`` in frames: exactly ``frames / max_frames``,
            so ``round(lengths * max_frames)`` recovers each frame count.
        """
        samples = torch.round(lengths * num_samples).long()
        total = self.num_frames(num_samples)
        return self.num_frames(samples).float() / max(total, 1)

    def forward(self, wavs, lengths=None):
        """Computes the log-mel features of a batch of waveforms.

        Arguments
        ---------
        wavs : torch.Tensor
            Waveforms ``(B, samples)`` in [-1, 1].
        lengths : torch.Tensor, optional
            Relative lengths ``(B,)``; frames past each end are zeroed.

        Returns
        -------
        torch.Tensor
            Features ``(B, frames, n_mels)``.
        """
        if wavs.shape[-1] < self.frame_length:
            raise ValueError(
                f"Waveforms of {wavs.shape[-1]} samples are shorter than one "
                f"{self.frame_length}-sample frame."
            )
        if self.chunk_frames is None:
            feats = self.log_mel(wavs)
        else:
            windowed, previous = self.windowed_samples(wavs)
            total = self.num_frames(wavs.shape[1])
            pieces = []
            for first in range(0, total, self.chunk_frames):
                start = first * self.hop_length
                count = min(self.chunk_frames, total - first)
                end = start + (count - 1) * self.hop_length + self.win_length
                if start:
                    previous = windowed[:, start - 1 : start]
                pieces.append(self.window_log_mel(windowed[:, start:end], previous))
            feats = torch.cat(pieces, dim=1)
        if lengths is not None:
            feats = feats * frame_mask(
                self.frame_lengths(lengths, wavs.shape[1]), feats.shape[1]
            ).unsqueeze(-1)
        return feats

    def windowed_samples(self, wavs):
        """The samples the windows cover, and the sample before them (or None).

        With the original framing, the ``window_offset`` samples before the
        first window and those after the last one (read by its frame, but
        under the window's zero padding) fall out; windows of ``win_length``
        every ``hop_length`` over what is left give exactly the frames (the
        padding only shifts the phase of a frame's spectrum, not its magnitude).
        """
        start = self.window_offset
        tail = self.frame_length - self.win_length - start
        if not start and not tail:
            return wavs, None
        previous = wavs[:, start - 1 : start] if start else None
        return wavs[:, start : wavs.shape[1] - tail], previous

    def log_mel(self, wavs):
        """Features of every frame of waveforms ``(B, samples)`` in one pass, unmasked."""
        return self.window_log_mel(*self.windowed_samples(wavs))

    def window_log_mel(self, wavs, previous=None):
        """Features of the ``win_length`` windows every ``hop_length`` of ``wavs``.

        ``previous`` ``(B, 1)`` is the sample before ``wavs`` for pre-emphasis;
        None at the start of a waveform, whose first sample is then scaled by
        ``1 - a``, as if preceded by itself (as the original).
        """
        wavs = wavs.float() * 32768.0
        previous = wavs[:, :1] if previous is None else previous.float() * 32768.0
        emphasized = torch.cat(
            [wavs[:, :1] - self.preemphasis * previous,
             wavs[:, 1:] - self.preemphasis * wavs[:, :-1]],
            dim=1,
        )
        frames = emphasized.unfold(1, self.win_length, self.hop_length)
        spectrum = torch.fft.rfft(frames * self.window, n=self.n_fft).abs()
        return torch.log(torch.clamp(spectrum @ self.mel_filters, min=1.0))


class UtteranceNorm(torch.nn.Module):
    """Per-utterance cepstral mean (and variance) normalisation over valid frames.

    Padded frames do not count in the statistics and come out as zeros. With
    ``std_norm`` the features are divided by their standard deviation where it
    is above ``min_std``, else by one, as in the original code.

    Arguments
    ---------
    std_norm : bool
        Also divide by the standard deviation (CMVN) instead of only
        subtracting the mean (CMN).
    min_std : float
        Standard deviations at or below this are replaced by one.

    Example
    -------
    >>> norm = UtteranceNorm()
    >>> feats = torch.tensor([[[1.0], [3.0], [0.0]]])
    >>> norm(feats, torch.tensor([2 / 3]))
    tensor([[[-1.],
             [ 1.],
             [ 0.]]])
    """

    def __init__(self, std_norm=False, min_std=0.01):
        super().__init__()
        self.std_norm = std_norm
        self.min_std = min_std

    def forward(self, feats, lengths=None):
        """Normalises ``feats`` ``(B, frames, F)`` with relative ``lengths`` ``(B,)``."""
        if lengths is None:
            mask = torch.ones_like(feats[:, :, :1])
        else:
            mask = frame_mask(lengths, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1)
        mean = (feats * mask).sum(dim=1, keepdim=True) / count
        centred = torch.where(mask > 0, feats - mean, 0.0)
        if self.std_norm:
            std = torch.sqrt((centred**2).sum(dim=1, keepdim=True) / count)
            centred = centred / torch.where(std > self.min_std, std, 1.0)
        return centred
