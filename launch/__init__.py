

import sys as _sys

# `python -m launch.<script>`: restart once with malloc settings that keep XLA's CPU temporaries
# from being re-faulted every step (launch/_malloc.py). Importing launch modules elsewhere (tests)
# changes nothing.
if "-m" in _sys.orig_argv[:-1] and _sys.orig_argv[_sys.orig_argv.index("-m") + 1].startswith("launch."):
    from launch._malloc import reexec_with_tunables

    reexec_with_tunables()

