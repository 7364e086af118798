"""Stage ``imagery``: one image tile per covered slippy-map tile, pixel-aligned with its mask.

* :mod:`pipeline.imagery.raster` — local GeoTIFF/COG orthophotos in any CRS, through one warped
  VRT per shard and source (tile-sized blocks), mosaicked, nodata/alpha, bands, 16-bit, overviews;
  :mod:`pipeline.imagery.raster_plan` — the rasters checked and planned once per region (bands,
  data type, footprints, the 16-bit -> 8-bit range);
* :mod:`pipeline.imagery.xyz`, :mod:`pipeline.imagery.wms` — tile-server URL templates;
* :mod:`pipeline.imagery.fetch` — robust concurrent downloads (retries, Retry-After, rate limit);
  :mod:`pipeline.imagery.download` — their settings, counts and rate limiter;
* :mod:`pipeline.imagery.common` — statuses, tile encoding and verification, secret redaction;
* :mod:`pipeline.imagery.shard` — one shard whatever the source, its manifest, region coverage.
"""
