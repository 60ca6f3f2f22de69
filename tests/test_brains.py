"""What the Brains tell their schedules, on a loader of known length."""

import speechbrain as sb
import torch

from dmha_modules.recipe.brains import DMHABrain
from dmha_modules.nn.losses import AMSoftmaxLoss
from dmha_modules.recipe.training import WarmupCosineLR


def test_training_loader_sets_the_epoch_length_of_lr_and_margin_schedules():
    schedule = WarmupCosineLR(lr=1.0, epochs=2)
    loss = AMSoftmaxLoss(margin=0.4, margin_warmup_epochs=1)
    brain = DMHABrain(
        label_encoders={}, group_loss=loss, modules={"model": torch.nn.Linear(1, 1)},
        hparams={"lr_annealing": schedule}, run_opts={"device": "cpu"},
    )
    brain.grad_accumulation_factor = 2
    data = sb.dataio.dataset.DynamicItemDataset({str(i): {"x": i} for i in range(10)})
    loader = brain.make_dataloader(data, sb.Stage.TRAIN, batch_size=2)
    assert len(loader) == 5
    # The lr moves per optimizer step (every 2nd batch here), the margin per batch.
    assert schedule.steps_per_epoch == 2 and loss.steps_per_epoch == 5
    # Evaluation loaders leave both alone.
    brain.make_dataloader(data, sb.Stage.VALID, batch_size=5)
    assert schedule.steps_per_epoch == 2 and loss.steps_per_epoch == 5
