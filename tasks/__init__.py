"""Thin Luigi tasks over the ``pipeline`` library, one module per stage.

``python -m tasks`` imports every stage module (see ``tasks/__main__.py``); importing this
package alone imports nothing else, and nothing here touches the network or CUDA at import.
"""
