"""Put first on PYTHONPATH by bench/revisions.py: the tree under test alone provides s4sweep's packages.

The venv's editable install adds an import finder that, after the tree on PYTHONPATH, still finds any module that
tree lacks in the installed checkout: a measurement of another revision would quietly run a mix of the two. Python
imports this module after the venv's .pth files have run, so the finder can be taken out here.
"""

import sys

sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
