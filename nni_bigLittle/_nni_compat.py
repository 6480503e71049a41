"""Import NNI's PyTorch NAS layer quietly.

NNI 3.0 warns once for every ``torch.nn`` class newer than itself ("is found to be not a
nn.Module"); the warning is harmless and would otherwise greet every user of the package.
Modules that build supernets import this first; the frozen model and the data code do not
need NNI at all.
"""
import warnings

with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='.*is found to be not a nn.Module', category=RuntimeWarning)
    import nni.nas.nn.pytorch  # noqa: F401
