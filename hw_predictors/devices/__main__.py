"""``python -m nni_bigLittle.hw_predictors.devices``: see :func:`~.command_line.main`."""
import sys

from nni_bigLittle.hw_predictors.devices.command_line import main

if __name__ == '__main__':  # pragma: no cover
    sys.exit(main())
