"""Every NNI one-shot strategy the design lists, unmodified, trains a small BigLittleSpace on digits through
NasExperiment with the co-training recipe (CoTrainingModule) and exports a valid sample.
(The multi-trial ones, RegularizedEvolution / Random / TPE, are in test_evaluation.py.)"""
import copy

import pytest
import torch

from nni.nas.evaluator.pytorch import Lightning, Trainer
from nni.nas.experiment import NasExperiment
from nni.nas.oneshot.pytorch.strategy import DARTS, ENAS, GumbelDARTS, Proxyless, RandomOneShot
from torch.utils.data import DataLoader, Subset

from nni_bigLittle.data import load_dataset
from nni_bigLittle.strategies.cotraining import CoTrainingModule, SandwichCoTraining

STRATEGIES = {
    'RandomOneShot': RandomOneShot,
    'ENAS': lambda: ENAS(reward_metric_name='default'),  # our recipe logs the dynamic accuracy as ``default``
    'DARTS': DARTS,
    'GumbelDARTS': GumbelDARTS,
    'Proxyless': Proxyless,
    'SandwichCoTraining': lambda: SandwichCoTraining(num_random=1),
}


@pytest.fixture(scope='module')
def digits_loaders():
    splits = load_dataset('digits', val_size=200, seed=0)
    # small batches: the differentiable strategies run every path of the relaxed supernet
    return (DataLoader(Subset(splits.train, range(64)), batch_size=8, shuffle=True,
                       generator=torch.Generator().manual_seed(0), drop_last=True),
            DataLoader(Subset(splits.val, range(16)), batch_size=8))


@pytest.mark.parametrize('name', sorted(STRATEGIES))
def test_oneshot_strategy_trains_the_space_and_exports_a_valid_sample(name, tiny_space, digits_loaders, tmp_path):
    train, val = digits_loaders
    space = copy.deepcopy(tiny_space).train()
    before = {k: v.clone() for k, v in space.state_dict().items() if k.endswith('weight')}
    evaluator = Lightning(CoTrainingModule(learning_rate=0.05, warmup_epochs=0),
                          Trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=2, logger=False,
                                  enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                  num_sanity_val_steps=0, accelerator='cpu'),
                          train_dataloaders=train, val_dataloaders=val)
    experiment = NasExperiment(space, evaluator, STRATEGIES[name]())
    experiment.config.experiment_working_directory = str(tmp_path)
    try:
        experiment.run()
        sample = experiment.export_top_models(formatter='dict')[0]
    finally:
        experiment.stop()
    assert space.spec.check(sample) is None, f'{name} exported an invalid pair: {space.spec.check(sample)}'
    changed = [k for k, v in before.items() if not torch.equal(v, space.state_dict()[k])]
    assert changed, f'{name} did not train any weight'
    model = tiny_space.freeze(sample).eval()
    with torch.no_grad():
        little, big = model(torch.zeros(2, 3, 32, 32))
    assert little.shape == big.shape == (2, 10)
