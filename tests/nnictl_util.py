"""Helpers for tests that drive a real NNI 3.0 manager through ``nnictl`` on loopback.

Plain functions, no pytest dependency.  Facts they rely on (verified against NNI 3.0):

* ``nnictl create --config C --port P`` returns (rc 0) after ~2-5 s; the manager (``nni_node/node main.js``)
  is detached into its own process group and keeps running -- also after the experiment is DONE/ERROR --
  until ``nnictl stop ID``.  The tuner dispatcher (``python -m nni --exp_params ...``) and the trials live in
  the manager's process group.
* ``nnictl`` keeps its experiment registry in ``$HOME/nni-experiments/.experiment`` (``stop``/``export``/
  ``experiment status`` look the id up there), and ``nnictl algo register`` writes
  ``$NNI_CONFIG_DIR/registered_algorithms.yml`` (default inside a venv: ``<venv>/nni/``).  ``isolated_env``
  redirects both into a scratch directory.
* ``nnictl experiment export`` only works while the manager is alive and exits 0 even when it fails
  ("ERROR: Experiment is not running..."), so ``export_trials`` checks the output file instead of the rc.
* An unknown tuner name / a tuner that cannot be imported is *not* caught by ``nnictl create`` (rc 0); the
  status turns to ERROR ~10 s later ("Tuner did not connect in 10 seconds").  A tuner that raises inside
  ``generate_parameters`` leaves the experiment RUNNING forever with no trials (error only in dispatcher.log):
  always give ``wait_done`` a timeout.
* ``nnictl stop ID`` with a HOME whose registry lacks ID prints "Experiment is not running...", exits 0 and
  stops nothing -- ``stop`` here therefore verifies and kills leftovers.  Never use ``nnictl stop --all`` with
  the real HOME: it stops every experiment registered there (other users' too).
* Trials inherit the manager's environment (HOME, PYTHONPATH, NNI_CONFIG_DIR, + NNI_EXP_ID, NNI_TRIAL_JOB_ID,
  ...); after ``import nni`` their ``print`` goes to ``trials/<id>/trial.log`` (trial.stdout stays empty).
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Iterator

VENV_BIN = Path(sys.executable).parent
NNICTL = str(VENV_BIN / 'nnictl') if (VENV_BIN / 'nnictl').exists() else (shutil.which('nnictl') or 'nnictl')

#: NNI manager statuses after which nothing more happens (the manager still runs until ``stop``).
TERMINAL_STATUSES = frozenset({'DONE', 'ERROR', 'STOPPED', 'VIEWED'})

# nnictl imports pkg_resources at start-up and prints a deprecation UserWarning on stderr; silence it only.
_PKG_RESOURCES_FILTER = 'ignore:pkg_resources is deprecated:UserWarning'
_ANSI = re.compile(r'\x1b\[[0-9;]*m')


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now (the manager needs only this one port in local mode)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def isolated_env(root: str | os.PathLike, pythonpath: Iterable[str | os.PathLike] = (),
                 isolate_home: bool = True, base: dict | None = None) -> dict:
    """Environment for nnictl / the manager / its dispatcher / trials, isolated under ``root``.

    * ``NNI_CONFIG_DIR=root/nni_config`` -> ``nnictl algo register`` writes there, not into the venv.
    * ``HOME=root/home`` (if ``isolate_home``) -> nnictl's registry ``~/nni-experiments/.experiment`` and the
      default ``experimentWorkingDirectory`` (``~/nni-experiments``) land there.  Trials inherit this HOME too.
    * the venv's bin dir goes first on PATH (so ``python``/``nnictl`` in trial commands are the venv's).
    * ``pythonpath`` entries are prepended to PYTHONPATH (the dispatcher imports custom tuners with it).
    """
    root = Path(root)
    env = dict(os.environ if base is None else base)
    cfg = root / 'nni_config'
    cfg.mkdir(parents=True, exist_ok=True)
    env['NNI_CONFIG_DIR'] = str(cfg)
    if isolate_home:
        home = root / 'home'
        home.mkdir(parents=True, exist_ok=True)
        env['HOME'] = str(home)
    env['PATH'] = os.pathsep.join([str(VENV_BIN), env.get('PATH', '')])
    # keep matplotlib's font cache out of the fresh HOME: rebuilding it delays every process that imports it
    env.setdefault('MPLCONFIGDIR', str(Path(tempfile.gettempdir()) / 'nni_biglittle_tests_mplconfig'))
    paths = [str(p) for p in pythonpath]
    if env.get('PYTHONPATH'):
        paths.append(env['PYTHONPATH'])
    if paths:
        env['PYTHONPATH'] = os.pathsep.join(paths)
    warn = env.get('PYTHONWARNINGS')
    env['PYTHONWARNINGS'] = f'{warn},{_PKG_RESOURCES_FILTER}' if warn else _PKG_RESOURCES_FILTER
    return env


def nnictl(*args: str, env: dict | None = None, timeout: float = 120, cwd: str | os.PathLike | None = None,
           check: bool = False) -> subprocess.CompletedProcess:
    """Run ``nnictl *args``; stdout/stderr captured as text with ANSI colour codes stripped."""
    proc = subprocess.run([NNICTL, *map(str, args)], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    proc.stdout = _ANSI.sub('', proc.stdout)
    proc.stderr = _ANSI.sub('', proc.stderr)
    if check and proc.returncode != 0:
        raise RuntimeError(f'nnictl {" ".join(map(str, args))} failed (rc {proc.returncode}):\n'
                           f'{proc.stdout}\n{proc.stderr}')
    return proc


def parse_experiment_id(output: str) -> str | None:
    """The id from ``nnictl create`` output ("Creating experiment, Experiment ID: abcd1234")."""
    output = _ANSI.sub('', output)
    m = re.search(r'Experiment ID:\s*([A-Za-z0-9_-]+)', output) or \
        re.search(r'nnictl stop ([A-Za-z0-9_-]+)"', output)
    return m.group(1) if m else None


def create_experiment(config: str | os.PathLike, port: int, env: dict | None = None, timeout: float = 120,
                      cwd: str | os.PathLike | None = None) -> str:
    """``nnictl create --config CONFIG --port PORT`` (detached); returns the experiment id.

    Raises RuntimeError (with nnictl's output) when nnictl exits non-zero or prints no id; if an id was printed
    anyway, the manager of that experiment is stopped first so nothing lingers.
    """
    proc = nnictl('create', '--config', str(config), '--port', str(port), env=env, timeout=timeout, cwd=cwd)
    out = proc.stdout + proc.stderr
    exp_id = parse_experiment_id(out)
    if proc.returncode != 0 or exp_id is None:
        if exp_id is not None:
            kill_experiment(exp_id)
        raise RuntimeError(f'nnictl create failed (rc {proc.returncode}):\n{out}')
    return exp_id


def _rest_get(port: int, path: str, timeout: float = 5):
    with urllib.request.urlopen(f'http://127.0.0.1:{port}/api/v1/nni{path}', timeout=timeout) as r:
        return json.loads(r.read().decode())


def check_status(port: int) -> dict | None:
    """``GET /api/v1/nni/check-status`` -> ``{'status': 'RUNNING', 'errors': [...]}``; None if unreachable."""
    try:
        return _rest_get(port, '/check-status')
    except (urllib.error.URLError, ConnectionError, OSError, ValueError):
        return None


def wait_done(port: int, timeout: float = 120, poll: float = 1.0,
              terminal: Iterable[str] = TERMINAL_STATUSES) -> str:
    """Poll check-status until the status is terminal (DONE / ERROR / STOPPED); returns it.

    Raises TimeoutError (with the last status and errors) after ``timeout`` seconds.
    """
    terminal = frozenset(terminal)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check_status(port)
        if last is not None and last.get('status') in terminal:
            return last['status']
        if time.monotonic() >= deadline:
            raise TimeoutError(f'experiment on port {port} not finished after {timeout}s; last check-status: {last}')
        time.sleep(poll)


def trial_jobs(port: int) -> list[dict]:
    """``GET /api/v1/nni/trial-jobs``: every trial with its status (SUCCEEDED/FAILED/...), including failed ones.

    ``finalMetricData[i]['data']`` is JSON-encoded twice (``json.loads(json.loads(data))`` gives the metric).
    """
    return _rest_get(port, '/trial-jobs')


def export_trials(exp_id: str, env: dict | None = None, path: str | os.PathLike | None = None,
                  timeout: float = 60) -> list[dict]:
    """``nnictl experiment export ID --type json --filename F``, parsed.

    Returns one record per trial *with a final metric*: ``{'parameter': {...}, 'value': <metric>,
    'trialJobId': '...'}`` where ``value`` is decoded (nnictl writes it as a JSON string, e.g.
    ``"{\\"default\\": 0.6, \\"acc\\": 0.9}"``).  Must be called before ``stop`` (needs the live manager).
    """
    tmpdir = None
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix='nnictl_export_')
        path = Path(tmpdir) / f'{exp_id}.json'
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    try:
        proc = nnictl('experiment', 'export', exp_id, '--type', 'json', '--filename', str(path.resolve()),
                      env=env, timeout=timeout)
        if not path.is_file():  # nnictl exits 0 even when the export failed
            raise RuntimeError(f'nnictl experiment export {exp_id} wrote nothing (rc {proc.returncode}):\n'
                               f'{proc.stdout}\n{proc.stderr}')
        records = json.loads(path.read_text())
    finally:
        if tmpdir is not None:
            shutil.rmtree(tmpdir, ignore_errors=True)
    for rec in records:
        if isinstance(rec.get('value'), str):
            with contextlib.suppress(ValueError):
                rec['value'] = json.loads(rec['value'])
    return records


# ---------------------------------------------------------------- processes

def _proc_table() -> list[tuple[int, int, str, dict]]:
    """(pid, pgid, cmdline, selected env vars) for every readable process (Linux /proc)."""
    rows = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read().replace(b'\0', b' ').decode(errors='replace').strip()
            pgid = os.getpgid(pid)
        except (OSError, ProcessLookupError):
            continue
        if not cmd:
            continue
        envs = {}
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                for item in f.read().split(b'\0'):
                    k, _, v = item.partition(b'=')
                    if k in (b'NNI_EXP_ID', b'NNI_TUNER_COMMAND_CHANNEL'):
                        envs[k.decode()] = v.decode(errors='replace')
        except OSError:
            pass
        rows.append((pid, pgid, cmd, envs))
    return rows


_MANAGER_RE = re.compile(r'nni_node/main\.js\b')


def _manager_matches(cmd: str, experiment_id: str | None, port: int | None) -> bool:
    if not _MANAGER_RE.search(cmd):
        return False
    if experiment_id is not None and not re.search(rf'--experiment-id {re.escape(experiment_id)}(\s|$)', cmd):
        return False
    if port is not None and not re.search(rf'--port {port}(\s|$)', cmd):
        return False
    return True


def manager_processes(experiment_id: str | None = None, port: int | None = None) -> list[str]:
    """``"PID CMDLINE"`` of NNI manager processes and everything in their process groups (dispatcher, trials).

    With no filter: every NNI manager on the machine (possibly other people's!).  With ``experiment_id`` and/or
    ``port``: only that experiment's.  Orphaned dispatchers/trials whose manager died are matched through their
    environment (``NNI_TUNER_COMMAND_CHANNEL=ws://localhost:PORT/tuner``, ``NNI_EXP_ID``).
    Unlike ``pgrep -af "node|nni"`` this does not match unrelated commands that merely contain "nni".
    """
    table = _proc_table()
    managers = {pid for pid, _, cmd, _ in table if _manager_matches(cmd, experiment_id, port)}
    filtered = experiment_id is not None or port is not None
    out = []
    for pid, pgid, cmd, envs in table:
        if pid == os.getpid():
            continue
        chan = envs.get('NNI_TUNER_COMMAND_CHANNEL', '')
        exp = envs.get('NNI_EXP_ID')
        if pid in managers or pgid in managers:
            hit = True
        elif filtered:  # orphans of a dead manager
            hit = ((experiment_id is not None and exp == experiment_id)
                   or (port is not None and f':{port}/' in chan))
        else:
            hit = '-m nni --exp_params' in cmd or bool(chan) or exp is not None
        if hit:
            out.append(f'{pid} {cmd}')
    return out


def _pids(lines: list[str]) -> list[int]:
    return [int(line.split(' ', 1)[0]) for line in lines]


def kill_experiment(experiment_id: str | None = None, port: int | None = None, grace: float = 10) -> list[str]:
    """Last resort: SIGTERM (then SIGKILL after ``grace`` s) the manager(s) and their process groups.

    Requires a filter; returns what was still alive after SIGTERM+grace (and got SIGKILL).
    """
    if experiment_id is None and port is None:
        raise ValueError('kill_experiment needs experiment_id or port')
    lines = manager_processes(experiment_id, port)
    for pid in _pids(lines):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and manager_processes(experiment_id, port):
        time.sleep(0.2)
    left = manager_processes(experiment_id, port)
    for pid in _pids(left):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return left


def stop(exp_id: str, env: dict | None = None, timeout: float = 90, port: int | None = None,
         ensure: bool = True) -> subprocess.CompletedProcess:
    """``nnictl stop ID`` (SIGTERM to the manager, waits for it; takes ~5-7 s).

    With ``ensure`` (default) any process of the experiment still alive afterwards is killed, and a
    RuntimeError is raised if something survives even SIGKILL.
    """
    try:
        proc = nnictl('stop', exp_id, env=env, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc = subprocess.CompletedProcess(e.cmd, -1, str(e.stdout or ''), str(e.stderr or ''))
    if ensure:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and manager_processes(exp_id, port):
            time.sleep(0.2)
        if manager_processes(exp_id, port):
            kill_experiment(exp_id, port)
            time.sleep(0.5)
            left = manager_processes(exp_id, port)
            if left:
                raise RuntimeError(f'processes of experiment {exp_id} survive stop + SIGKILL: {left}')
    return proc


@contextlib.contextmanager
def running_experiment(config: str | os.PathLike, port: int | None = None, env: dict | None = None,
                       timeout: float = 120, cwd: str | os.PathLike | None = None) -> Iterator[tuple[str, int]]:
    """``with running_experiment(cfg, env=env) as (exp_id, port): ...`` -- always stopped on exit."""
    port = free_port() if port is None else port
    exp_id = create_experiment(config, port, env=env, timeout=timeout, cwd=cwd)
    try:
        yield exp_id, port
    finally:
        stop(exp_id, env=env, port=port)


def experiment_log_dir(working_dir: str | os.PathLike, exp_id: str) -> Path:
    """``<experimentWorkingDirectory>/<id>/log``: dispatcher.log (tuner logging + tracebacks),
    nnimanager.log, experiment.log, nnictl_stdout.log / nnictl_stderr.log (stdout/stderr of the manager and
    the dispatcher, e.g. tuner ``print``s and uncaught tracebacks).  Trials:
    ``<id>/environments/local-env/trials/<trialJobId>/trial.{log,stdout,stderr}``."""
    return Path(working_dir) / exp_id / 'log'


def dispatcher_log(working_dir: str | os.PathLike, exp_id: str) -> str:
    """Text of ``<experimentWorkingDirectory>/<id>/log/dispatcher.log`` ('' if absent).  Tuner exceptions land
    here: import/constructor errors (dispatcher exits, status -> ERROR after ~10 s) and exceptions inside
    ``generate_parameters`` (logged as ERROR by nni.runtime.msg_dispatcher_base; the experiment then stays
    RUNNING with no trials -- only a timeout catches it)."""
    path = experiment_log_dir(working_dir, exp_id) / 'dispatcher.log'
    return path.read_text() if path.exists() else ''


def register_algo(meta: str | os.PathLike, env: dict | None = None) -> subprocess.CompletedProcess:
    """``nnictl algo register --meta META`` (imports the class: it must be importable with env's PYTHONPATH).

    Writes ``$NNI_CONFIG_DIR/registered_algorithms.yml``.  Raises RuntimeError on failure.
    """
    proc = nnictl('algo', 'register', '--meta', str(meta), env=env)
    if proc.returncode != 0 or 'registered sucessfully' not in proc.stdout:
        raise RuntimeError(f'nnictl algo register failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
    return proc


def unregister_algo(name: str, env: dict | None = None, missing_ok: bool = True) -> subprocess.CompletedProcess:
    """``nnictl algo unregister NAME``.  nnictl exits 0 even for unknown names ("ERROR: builtin algorithms NAME
    not found!") and builtin ones ("... is provided by nni, can not be unregistered!"); this checks stdout."""
    proc = nnictl('algo', 'unregister', name, env=env)
    if 'unregistered sucessfully' not in proc.stdout and not (missing_ok and 'not found' in proc.stdout):
        raise RuntimeError(f'nnictl algo unregister {name} failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}')
    return proc


def decode_dispatcher_params(cmdline: str) -> dict | None:
    """Decode the base64 ``--exp_params`` of a dispatcher command line (the experiment config as JSON)."""
    m = re.search(r'--exp_params (\S+)', cmdline)
    return json.loads(base64.b64decode(m.group(1))) if m else None
