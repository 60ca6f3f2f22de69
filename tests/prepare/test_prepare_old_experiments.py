"""Experiment folders of earlier versions name ``dmha_modules.data_prep`` in their
hyperparams.yaml; ``dmha export --experiment`` must still load them."""

import pydoc

import dmha_modules.prepare


def test_old_module_name_locates_the_preparer():
    located = pydoc.locate("dmha_modules.data_prep.prepare_kaldi")
    assert located is dmha_modules.prepare.prepare_kaldi
