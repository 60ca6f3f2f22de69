"""``dmha prepare <source>``: a corpus -> SpeechBrain CSV manifests.

Sources: ``labels``, ``kaldi``, ``commonvoice``, ``voxceleb``, one function
of :mod:`dmha_modules.prepare` each; every option is that function's
argument of the same name.

Example
-------
>>> from dmha_modules.cli import build_parser
>>> args = build_parser().parse_args(["prepare", "voxceleb", "--data-folder", "vox",
...                                   "--save_folder", "out", "--seed", "7"])
>>> args.function.__name__, function_arguments(args)
('prepare_voxceleb', {'data_folder': 'vox', 'save_folder': 'out', 'seed': 7})
"""

from dmha_modules.cli.inputs import check_outputs
from dmha_modules.cli.options import (
    add_command,
    comma_list,
    finite_float,
    function_arguments,
    option,
    positive_int,
    share,
)
from dmha_modules.prepare import (
    prepare_commonvoice,
    prepare_kaldi,
    prepare_labels_file,
    prepare_voxceleb,
)


# The options naming files or folders a source reads (those of its data folder are in it).
INPUT_PATHS = ("data_folder", "train_labels", "valid_labels", "trials_clients",
               "trials_impostors", "valid_data_folder", "trials_file")


def _negation(parser, name, dest, const, help):
    """``--no_<name>`` (also ``--no-<name>``): sets the argument ``dest`` to ``const``."""
    option(parser, f"no_{name}", dest=dest, action="store_const", const=const, help=help)


def _source(sources, name, function, help, split_without=None):
    """A source's parser with the options every source has.

    ``split_without`` says when a source that makes its own speaker split
    also holds out test speakers.
    """
    parser = add_command(sources, name, run, help=help, function=function)
    option(parser, "data_folder", required=True,
           help="corpus folder; manifests refer to it as $data_root")
    option(parser, "save_folder", required=True,
           help="where the manifests, summary.json and rejects.csv go")
    option(parser, "skip_bad", action="store_true",
           help="drop bad rows, listed in rejects.csv, instead of failing")
    option(parser, "jobs", type=positive_int,
           help="processes reading audio headers; default one per core")
    if split_without is not None:
        option(parser, "valid_ratio", type=share,
               help="share of the speakers held out for validation")
        option(parser, "test_ratio", type=share,
               help=f"share of the speakers held out for test, without {split_without}")
        option(parser, "seed", type=int, help="seed of the speaker split")
    return parser


def _labels(sources):
    parser = _source(sources, "labels", prepare_labels_file,
                     "the original code's labels files (path label -1) and trial files")
    option(parser, "train_labels", required=True,
           help="train labels file: 'path label -1' per line")
    option(parser, "valid_labels", help="validation labels file")
    option(parser, "trials_clients", help="same-speaker trial pairs: 'pathA pathB' per line")
    option(parser, "trials_impostors", help="different-speaker trial pairs")
    option(parser, "label_kind", choices=("speaker", "age_group"), help="what the labels are")
    option(parser, "num_classes", type=positive_int,
           help="N, labels being 0..N-1; by default the largest train label + 1")
    option(parser, "valid_data_folder",
           help="folder the valid labels and trial paths are relative to, when not --data_folder")


def _kaldi(sources):
    parser = _source(sources, "kaldi", prepare_kaldi,
                     "Kaldi data dirs with ages (speechocean762, downloaded when absent)",
                     split_without="a test dir")
    option(parser, "train_dir", help="train data dir in --data_folder")
    option(parser, "test_dir", help="test data dir in --data_folder, if any")
    option(parser, "age_bins", type=comma_list(finite_float),
           help="age-group edges in years, comma-separated")
    option(parser, "age_groups", type=comma_list(str),
           help="age-group names, comma-separated, one more than the edges")
    option(parser, "download_url",
           help="where to download speechocean762 when --data_folder is absent")
    _negation(parser, "download", "download_url", None,
              "never download; fail when --data_folder is absent")


def _commonvoice(sources):
    parser = _source(sources, "commonvoice", prepare_commonvoice,
                     "a Common Voice release folder (ages as Common Voice's age groups)",
                     split_without="official splits")
    _negation(parser, "official_splits", "use_official_splits", False,
              "split validated.tsv by speaker even when train/dev/test.tsv exist")


def _voxceleb(sources):
    parser = _source(sources, "voxceleb", prepare_voxceleb,
                     "VoxCeleb1/2 trees (id*/video/*.wav|.flac|.m4a) and an official trial list",
                     split_without="a trial list")
    option(parser, "trials_file", help="official trial list, veri_test2.txt format")


def register(commands):
    """Adds ``prepare`` and its sources to the ``dmha`` verbs."""
    prepare = commands.add_parser(
        "prepare",
        help="convert a corpus into SpeechBrain CSV manifests",
        description="Convert a corpus into SpeechBrain CSV manifests "
        "(train/valid/test.csv, trials.csv, summary.json).",
    )
    sources = prepare.add_subparsers(dest="source", required=True)
    for add_source in (_labels, _kaldi, _commonvoice, _voxceleb):
        add_source(sources)


def run(args):
    """Prepares the source; prints each output written."""
    arguments = function_arguments(args)
    check_outputs([("--save_folder", args.save_folder, "folder")],
                  [(f"--{name}", arguments[name]) for name in INPUT_PATHS if name in arguments])
    outputs = args.function(**arguments)
    for name, path in outputs.items():
        print(f"{name}: {path}")
    return 0
