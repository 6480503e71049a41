"""The deploy stage: a verified bundle per searched device and a short side-by-side benchmark of it here."""
from __future__ import annotations

import os
from typing import Any

from nni_bigLittle.app.runs import RunFolder
from nni_bigLittle.app.stages.export import export_bundle

__all__ = ['deploy_stage']


def deploy_stage(run_dir: str | os.PathLike, pick: str = 'accurate', verify: int | None = 1000,
                 bench_images: int = 200, bench_rounds: int = 3, progress: bool = True) -> dict[str, Any]:
    """For each searched device: a deployment bundle of its ``pick`` front model in ``<run>/bundles/<device>``
    (verified against PyTorch on ``verify`` test images) and a short side-by-side benchmark of it on this
    machine (ONNX Runtime, 1 thread), ``<run>/results/bench_<device>.{md,json}``. Done bundles and benchmarks
    are kept on a re-run."""
    import json
    from nni_bigLittle.deploy.bench import bench, format_bench, write_bench
    run = RunFolder(run_dir)
    devices = run.searched_devices()
    if not devices:
        raise FileNotFoundError(f'{run.path} has no search results; run the search stage first.')
    written = {}
    for device in devices:
        folder = run.bundle_dir(device)
        manifest = folder / 'manifest.json'
        if not manifest.is_file() or json.loads(manifest.read_text()).get('verification') is None:
            export_bundle(run.path, folder, device=device, pick=pick, verify=verify, progress=progress)
        results = run.results_dir / f'bench_{device}'
        if not (results / 'bench.json').is_file():
            result = bench(folder, images=bench_images, rounds=bench_rounds, warmup=10, progress=progress)
            write_bench(result, results)
            print(f'[deploy] {device}: bundle {folder.relative_to(run.path)}, measured here:\n' + format_bench(result))
        written[device] = {'bundle': str(folder.relative_to(run.path)), 'bench': str(results.relative_to(run.path))}
    run.update_status(deploy={'done': True, 'devices': written})
    return written
