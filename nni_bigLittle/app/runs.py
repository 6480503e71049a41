"""Run folders: the resolved config, checkpoints, per-epoch metrics and results of one run.

A run folder is created by the first invocation of a command and found again by the next one:
if its ``config.yaml`` equals the new resolved config the run resumes, otherwise the command stops
before touching anything (a changed config in an old folder would mix two experiments).

::

    <run>/config.yaml      resolved config (every default filled in)
    <run>/checkpoints/     last.ckpt (+ step checkpoints)
    <run>/metrics.csv      one row per epoch (rewritten rows on resume, never duplicated)
    <run>/status.json      what finished, when, wall time per stage
"""
from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Mapping

import yaml
from nni_bigLittle.errors import BigLittleError
from nni_bigLittle.evaluation.front import FRONT_FILE

__all__ = ['RunFolder', 'RunConfigMismatch', 'write_json', 'environment', 'copy_records']


class RunConfigMismatch(BigLittleError, RuntimeError):
    """The run folder belongs to a run with a different config."""


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Atomic JSON write (a killed process never leaves half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix='.tmp')
    with os.fdopen(fd, 'w') as f:
        json.dump(data, f, indent=2, sort_keys=False, default=_jsonable)
    os.replace(tmp, path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, 'item'):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f'Not JSON serialisable: {type(value).__name__}')


def environment(threads: int | None = None) -> dict[str, Any]:
    """Machine and library versions recorded with every result."""
    import torch
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in ('nni', 'pytorch_lightning', 'torchvision', 'onnxruntime'):
        try:
            versions[name] = __import__(name).__version__
        except Exception:  # optional packages
            pass
    import nni_bigLittle
    return {'date': datetime.datetime.now().isoformat(timespec='seconds'), 'cpu': cpu,
            'logical_cpus': os.cpu_count(), 'threads': threads or torch.get_num_threads(),
            'python': platform.python_version(), 'torch': torch.__version__, **versions,
            'nni_bigLittle': nni_bigLittle.__version__, 'gpu': torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None,
            'load_avg_1min': round(os.getloadavg()[0], 2) if hasattr(os, 'getloadavg') else None}


class RunFolder:
    """One run's folder (see the module docstring)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / 'config.yaml'

    @property
    def checkpoints(self) -> Path:
        return self.path / 'checkpoints'

    @property
    def last_checkpoint(self) -> Path | None:
        last = self.checkpoints / 'last.ckpt'
        return last if last.is_file() else None

    @property
    def supernet_path(self) -> Path:
        """The trained supernet (``BigLittleSpace.save``), written when co-training is done."""
        return self.path / 'supernet.pt'

    @property
    def results_dir(self) -> Path:
        """Tables, benchmarks, ablations and the report of the run."""
        return self.path / 'results'

    def export_dir(self, device: str | None = None) -> Path:
        """Frozen front models (``front_<k>.pt``), per device."""
        return self.path / 'export' if device is None else self.path / 'export' / device

    def bundle_dir(self, device: str) -> Path:
        """The deployment bundle of ``device``'s chosen front model."""
        return self.path / 'bundles' / device

    # ----- search -----
    def search_dir(self, device: str) -> Path:
        """Where the search for ``device`` keeps its checkpoint and writes its front."""
        return self.path / 'search' / device

    def searched_devices(self) -> list[str]:
        """The devices with a searched front, sorted by name."""
        from nni_bigLittle.evaluation.front import searched_folders  # imports torch: only when asked
        return [folder.name for folder in searched_folders(self.path / 'search')]

    def front(self, device: str) -> dict[str, Any]:
        """The searched front of ``device`` (see :mod:`nni_bigLittle.evaluation.front`)."""
        from nni_bigLittle.evaluation.front import read_front
        return read_front(self.search_dir(device), hint=f'run `nni-biglittle search {self.path}` first')

    def open(self, config: Mapping[str, Any], ignore: tuple[str, ...] = ()) -> bool:
        """Create the folder with ``config`` or check it matches the stored one.

        Returns ``True`` when the folder already held this run (resume). Keys in ``ignore`` (e.g.
        ``threads``) may differ between invocations.
        """
        config = json.loads(json.dumps(dict(config), default=_jsonable))  # plain YAML-able types
        if self.config_path.is_file():
            try:
                stored = yaml.safe_load(self.config_path.read_text()) or {}
            except yaml.YAMLError as err:
                raise RunConfigMismatch(f'{self.config_path} is not valid YAML ({err}); move the folder away or '
                                        'choose another run folder.') from None
            strip = lambda c: {k: v for k, v in c.items() if k not in ignore}  # noqa: E731
            if strip(stored) != strip(config):
                diff = sorted(k for k in set(stored) | set(config) if k not in ignore and stored.get(k) != config.get(k))
                raise RunConfigMismatch(
                    f'The run folder {self.path} holds a run with a different config (differs in: {", ".join(diff)}). '
                    'Re-run with the same config to resume it, or choose a new run folder.')
            return True
        self.path.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        return False

    def config(self) -> dict[str, Any]:
        """The run's config as stored when it was opened (read once per RunFolder; the stages take it from here)."""
        if getattr(self, '_config', None) is None:
            if not self.config_path.is_file():
                raise FileNotFoundError(f'{self.path} is not a run folder (no {self.config_path.name}); give the folder '
                                        'of a `nni-biglittle run`, `cotrain` or `baselines train` run.')
            try:
                self._config = yaml.safe_load(self.config_path.read_text()) or {}
            except yaml.YAMLError as err:
                raise RunConfigMismatch(f'{self.config_path} is not valid YAML ({err}).') from None
        return self._config

    # ----- metrics -----
    def upsert_metrics(self, row: Mapping[str, Any], key: str = 'epoch', name: str = 'metrics.csv') -> None:
        """Write ``row`` into the CSV, replacing rows whose ``key`` is >= its own (a resumed epoch)."""
        path = self.path / name
        rows = []
        if path.is_file():
            with path.open(newline='') as f:
                rows = [r for r in csv.DictReader(f) if float(r[key]) < float(row[key])]
        rows.append({k: _fmt(v) for k, v in row.items()})
        fields = list(dict.fromkeys(k for r in rows for k in r))
        tmp = path.with_suffix('.tmp')
        with tmp.open('w', newline='') as f:
            writer = csv.DictWriter(f, fields)
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)

    def read_metrics(self, name: str = 'metrics.csv') -> list[dict[str, str]]:
        path = self.path / name
        if not path.is_file():
            return []
        with path.open(newline='') as f:
            return list(csv.DictReader(f))

    # ----- status -----
    def status(self) -> dict[str, Any]:
        path = self.path / 'status.json'
        return json.loads(path.read_text()) if path.is_file() else {}

    def update_status(self, **entries: Any) -> None:
        status = self.status()
        status.update(entries)
        write_json(self.path / 'status.json', status)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f'{value:.6g}'
    if hasattr(value, 'item'):
        return f'{value.item():.6g}'
    return value


# the records of a run worth committing: small text files; weights, checkpoints and NNI's folders stay out
RECORD_PATTERNS = ('config.yaml', 'metrics.csv', 'status.json', f'search/*/{FRONT_FILE}', 'search/*/front.csv',
                   'search/*/history.csv', 'results/*.csv', 'results/*.md', 'results/*.json',
                   'baselines/*/status.json', f'ablation_dimensions/*/{FRONT_FILE}',
                   f'ablation_strategy/*/search/{FRONT_FILE}', 'ablation_strategy/*/search/wall_s.json',
                   'ablation_strategy/*/metrics.csv', 'ablation_strategy/darts/result.json')


def copy_records(run_dir: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Copy the text records of a run folder (:data:`RECORD_PATTERNS`) to ``dest``, keeping the layout.
    Returns the copied relative paths."""
    import shutil
    run_dir, dest = Path(run_dir), Path(dest)
    if not (run_dir / 'config.yaml').is_file():
        raise FileNotFoundError(f'{run_dir} is not a run folder (no config.yaml).')
    copied = []
    for pattern in RECORD_PATTERNS:
        for path in sorted(run_dir.glob(pattern)):
            target = dest / path.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            copied.append(str(path.relative_to(run_dir)))
    return copied
