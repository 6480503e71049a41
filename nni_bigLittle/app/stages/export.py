"""The export stage: front models frozen to ``<run>/export/<device>/front_<k>.pt`` at their operating points,
and deployment bundles (``nni-biglittle export``) from a run or such a file."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nni_bigLittle.app.config import BUNDLE_PICKS, SEARCH_DEFAULTS
from nni_bigLittle.app.runs import RunFolder
from nni_bigLittle.app.stages.inputs import load_training_data, run_data, trained_supernet
from nni_bigLittle.app.stages.search import pick_across_front

__all__ = ['EXPORTED_FORMAT', 'export_stage', 'load_exported', 'exported_checkpoint', 'export_bundle']


def export_stage(run_dir: str | os.PathLike, count: int = 3) -> dict[str, Any]:
    """Freeze ``count`` models across each searched front (weights from the supernet, batch norm
    re-calibrated, the front's operating point) to ``<run>/export/<device>/front_<k>.pt``: a dict with the
    ``operating_point``, the ``spec``, the front ``record`` and the ``state_dict`` of the ``BigLittleModel``,
    loadable without NNI (:func:`load_exported`)."""
    import dataclasses
    import torch
    from nni_bigLittle.evaluation.front import entry_point
    from nni_bigLittle.strategies.evolution import build_model
    run = RunFolder(run_dir)
    supernet = trained_supernet(run)
    _, calibration, _, _ = run_data(run)
    written = []
    for device in run.searched_devices():
        summary = run.front(device)
        folder = run.export_dir(device)
        folder.mkdir(parents=True, exist_ok=True)
        for rank, record in enumerate(pick_across_front(summary['front'], summary['objective'], count)):
            point = entry_point(record)
            model = build_model(supernet, point, calibration)
            path = folder / f'front_{rank + 1}.pt'
            torch.save({'format': EXPORTED_FORMAT, 'spec': dataclasses.asdict(supernet.spec),
                        'operating_point': point.to_dict(),
                        'record': {k: v for k, v in record.items() if k not in ('sample', 'operating_point')},
                        'state_dict': model.state_dict()}, path)
            written.append(str(path.relative_to(run.path)))
    if not written:
        raise FileNotFoundError(f'{run.path} has no search results; run the search stage first.')
    run.update_status(export={'done': True, 'files': written})
    return {'files': written}


EXPORTED_FORMAT = 'nni_bigLittle.exported/2'  # /1 (0.1) stored sample + threshold instead of the operating point


def load_exported(path: str | os.PathLike, with_payload: bool = False):
    """The ``BigLittleModel`` of a file written by :func:`export_stage` (eval mode, at its operating point);
    with ``with_payload``, ``(model, payload)`` where the payload holds ``spec``, the ``operating_point``
    (an :class:`~nni_bigLittle.nn.operating_point.OperatingPoint`) and the front ``record``."""
    import torch
    from nni_bigLittle.nn.model import BigLittleModel
    from nni_bigLittle.nn.operating_point import OperatingPoint
    from nni_bigLittle.nn.router import RouterSetting
    from nni_bigLittle.search_spaces.spec import SpaceSpec
    try:
        payload = torch.load(path, map_location='cpu', weights_only=True)  # tensors and plain data only
    except Exception as err:  # pickle / zip errors of a truncated or foreign file
        raise ValueError(f'{path} cannot be read as an exported model ({str(err).splitlines()[0]}).') from None
    formats = (EXPORTED_FORMAT, 'nni_bigLittle.exported/1')
    if not isinstance(payload, dict) or payload.get('format') not in formats:
        raise ValueError(f'{path} is not a model exported by nni-biglittle run / export_stage.')
    if payload['format'] == EXPORTED_FORMAT:
        point = OperatingPoint.from_dict(payload['operating_point'])
    else:
        record = payload.get('record') or {}
        point = OperatingPoint({k: v for k, v in payload['sample'].items() if not k.startswith('router/')},
                               RouterSetting(payload['sample']['router/policy'], float(payload['threshold']),
                                             target_escalation=record.get('target_escalation'),
                                             calibrated_on='validation'))
    model = BigLittleModel(SpaceSpec.from_dict(payload['spec']).decode(point.flat_sample))
    model.load_state_dict(payload['state_dict'])
    payload = {**payload, 'operating_point': point}
    return (model.eval(), payload) if with_payload else model.eval()


def exported_checkpoint(run: RunFolder, device: str | None, pick: str) -> tuple[Path, str]:
    """The front model of a run to bundle: ``<run>/export/<device>/front_<k>.pt`` (exported first if needed)."""
    exported = run.export_dir()
    if not any(exported.glob('*/front_*.pt')):
        print(f'[export] no frozen front models in {run.path.name}/export yet: running the export stage', flush=True)
        export_stage(run.path)
    devices = [p.name for p in sorted(exported.iterdir()) if any(p.glob('front_*.pt'))]
    preferred = [d for d in SEARCH_DEFAULTS['devices'] if d in devices] + [d for d in devices
                                                                          if d not in SEARCH_DEFAULTS['devices']]
    if device is None:
        device = preferred[0]
    elif device not in devices:
        raise ValueError(f'{run.path.name} has no front models for device {device!r}; it has {devices}.')
    files = sorted((exported / device).glob('front_*.pt'), key=lambda p: int(p.stem.split('_')[1]))
    index = {'cheapest': 0, 'middle': len(files) // 2, 'accurate': len(files) - 1}[pick]
    return files[index], device


def export_bundle(source: str | os.PathLike, out: str | os.PathLike, *, device: str | None = None,
                  pick: str = 'accurate', verify: int | None = 1000, sample_images: int = 256,
                  progress: bool = True) -> dict[str, Any]:
    """A deployment bundle (``nni-biglittle export``) from a run folder or an exported checkpoint.

    From a run: the ``pick`` model (cheapest / middle / most accurate of the frozen front models) of
    ``device``'s front (default: the first searched device). Verified against PyTorch on the first ``verify``
    test images (``None``: all of them, ``0``: skip) and given the first ``sample_images`` raw test images
    as ``data.npz``. A checkpoint outside a run folder has no data to verify with or to preprocess for:
    its bundle takes ready float input only."""
    import dataclasses
    import torch
    from torch.utils.data import DataLoader, Subset
    from nni_bigLittle.data import ArrayDataset
    from nni_bigLittle.deploy.export import write_bundle
    if pick not in BUNDLE_PICKS:
        raise ValueError(f'pick must be one of {BUNDLE_PICKS}, got {pick!r}.')
    source = Path(source)
    if source.is_dir():
        run = RunFolder(source)
        if not run.config_path.is_file():
            raise FileNotFoundError(f'{source} is not a run folder (no config.yaml) or a .pt checkpoint; give the '
                                    'folder of a `nni-biglittle run` / `cotrain` + `search` run.')
        checkpoint, device = exported_checkpoint(run, device, pick)
    elif source.is_file():
        checkpoint = source
        holder = next((p for p in source.parents if (p / 'config.yaml').is_file()), None)
        run = RunFolder(holder) if holder is not None else None
        device = source.parent.name if run is not None else None
    else:
        raise FileNotFoundError(f'{source}: no such run folder or checkpoint.')
    model, payload = load_exported(checkpoint, with_payload=True)
    meta = {'checkpoint': checkpoint.name, 'device': device, 'front_record': payload.get('record')}
    preprocess = class_names = verify_inputs = sample_data = None
    if run is not None:
        splits = load_training_data(run.config(), augment='none')
        preprocess = {'mean': splits.info['mean'], 'std': splits.info['std']}
        class_names = splits.class_names
        meta.update(run=run.path.name, checkpoint=str(checkpoint.relative_to(run.path)), dataset=splits.name)
        n_test = len(splits.test)
        count = n_test if verify is None else min(int(verify), n_test)
        if count > 0:
            verify_inputs = [x for x, _ in DataLoader(Subset(splits.test, range(count)), batch_size=250)]
            meta['verified_on'] = f'the first {count} of {n_test} test images of {splits.name}'
        if sample_images > 0 and isinstance(splits.test, ArrayDataset):
            k = min(sample_images, n_test)
            sample_data = {'x_test': splits.test.images[:k].permute(0, 2, 3, 1).contiguous().numpy(),
                           'y_test': splits.test.labels[:k].numpy()}
    else:
        print(f'[export] {checkpoint.name} is not inside a run folder: no data to verify with, and the bundle '
              'takes ready (preprocessed) float input only', flush=True)
    spec = payload['spec'] if isinstance(payload['spec'], dict) else dataclasses.asdict(payload['spec'])
    with torch.no_grad():
        return write_bundle(model, out, preprocess=preprocess, class_names=class_names, spec=spec,
                            verify_inputs=verify_inputs, sample_data=sample_data, source=meta, progress=progress,
                            operating_point=payload['operating_point'])
