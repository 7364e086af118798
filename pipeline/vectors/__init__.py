"""Stage ``vectorize``: probability tiles -> polygons (area classes) and centrelines (line classes)."""
