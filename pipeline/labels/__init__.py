"""Stage ``extract``: label features from OSM extracts or vector files, tags, the features file, feedback."""
