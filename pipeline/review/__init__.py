"""Stage ``compare`` and what a mapper reads: change layers, scores, JOSM/MapRoulette files, QGIS project, report."""
