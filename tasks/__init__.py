"""Thin Luigi tasks over the ``pipeline`` library, one module per stage.

``python -m tasks <Task>`` imports the module of that task (``TASK_MODULES`` in
``tasks/__main__.py``) and, through ``requires()``, those upstream; a task module imports at its
top only what completeness checks need (no pandas, numpy, geometry or torch: ``run()`` imports
those). Importing this package alone imports nothing else, and nothing here touches the network
or CUDA at import.
"""
