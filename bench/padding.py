"""Padded batches through SpeechBrain's own ``EncoderClassifier.encode_batch``, both folder layouts.

For each model of ``tests/cli/test_cli_padding.py`` (the two defaults and every other
``--embedding``, as ``hparams/*.yaml`` build them, random weights with BatchNorm statistics
of generated voices; seeded, so the same folders every run), the worst cosine between an
utterance's embedding in a zero-padded batch (10 utterances a batch, longest first, the
waveforms' relative lengths as SpeechBrain users pass them) and alone, over the 50 real
utterances of that test (35 of speechocean762, 15 of LibriSpeech test-other, 2.3 to 17.3 s).
Two rows per model: the folder as ``write_model_folder`` writes it now, and the same folder
rewritten to the layout before the waveform embedding model (2026-12-08).

    python bench/padding.py [MODEL ...]    # default: every model; DMHA_DATA for the speech
"""

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from speechbrain.inference.classifiers import EncoderClassifier  # noqa: E402

from tests.cli.cli_helpers import reference_wav  # noqa: E402
from tests.cli.test_cli_padding import (  # noqa: E402
    MODELS,
    old_layout,
    real_utterances,
    speechbrain_alone,
    speechbrain_batches,
    worst_cosine,
    write_default_folder,
)
from tests.conftest import shared_data_dir  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=list(MODELS), choices=list(MODELS))
    models = parser.parse_args().models
    wavs = [reference_wav(path) for path in real_utterances(shared_data_dir())]
    root = Path(tempfile.mkdtemp())
    print("| model | layout | worst cosine, batched vs alone |\n|---|---|---:|")
    for name in models:
        folder = write_default_folder(name, root)
        old = root / f"{name}_old"
        shutil.copytree(folder, old)
        old_layout(old)
        alone = None
        for layout, path in (("now", folder), ("before 2026-12-08", old)):
            model = EncoderClassifier.from_hparams(source=str(path),
                                                   savedir=str(root / f"sb_{name}_{path.name}"))
            if alone is None:
                alone = speechbrain_alone(model, wavs)
            else:  # one file alone is the same computation in either layout
                torch.testing.assert_close(speechbrain_alone(model, wavs[:1]), alone[:1],
                                           rtol=0, atol=0)
            batched = speechbrain_batches(model, wavs, 10)
            print(f"| {name} | {layout} | {worst_cosine(batched, alone):.6f} |", flush=True)
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
