"""Open an osmsat QGIS project with PyQGIS (offscreen) and check every layer; optionally render it.

Run with the system Python that has ``python3-qgis`` (Debian: ``apt-get install python3-qgis``):
    QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/qgis_check.py data/demo/demo.qgs [out.png]
Prints one JSON object: {"layers": {name: {"valid": bool, "features": n | null, "type": ..., "source": ...,
"crs": authid, "group": the layer's group in the layer tree}}, "groups": [top-level group names]};
exits 1 when a layer is invalid or a vector layer is empty.
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import (
    QgsApplication,
    QgsMapLayerType,
    QgsMapRendererParallelJob,
    QgsMapSettings,
    QgsProject,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor


def main(path: str, png: str | None) -> int:
    app = QgsApplication([], False)
    app.initQgis()
    project = QgsProject.instance()
    if not project.read(path):
        print(json.dumps({"error": f"QGIS could not read {path}"}))
        return 1
    report, ok = {}, True
    root = project.layerTreeRoot()
    for layer in project.mapLayers().values():
        vector = layer.type() == QgsMapLayerType.VectorLayer
        n = layer.featureCount() if vector and layer.isValid() else None
        node = root.findLayer(layer.id())
        parent = node.parent() if node is not None else None
        report[layer.name()] = {"valid": layer.isValid(), "features": n, "type": "vector" if vector else "raster",
                                "source": layer.source(), "crs": layer.crs().authid(),
                                "group": parent.name() if parent is not None and parent is not root else None}
        ok &= layer.isValid() and (not vector or (n or 0) > 0)
    if png:
        settings = QgsMapSettings()
        settings.setLayers([t.layer() for t in root.findLayers() if t.isVisible()])
        settings.setDestinationCrs(project.crs())
        view = project.viewSettings().defaultViewExtent()
        settings.setExtent(view if not view.isEmpty() else settings.fullExtent())
        settings.setOutputSize(QSize(900, 900))
        settings.setBackgroundColor(QColor(255, 255, 255))
        job = QgsMapRendererParallelJob(settings)
        job.start()
        job.waitForFinished()
        job.renderedImage().save(png, "png")
    groups = [g.name() for g in root.children() if g.nodeType() == 0]  # QgsLayerTreeNode.NodeGroup
    print(json.dumps({"layers": report, "crs": project.crs().authid(), "groups": groups}, indent=1))
    app.exitQgis()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None))
