"""Whole slides: overlapping tiles, each with its own illumination angles, run on dask.

Modules (import them directly; this package imports nothing on its own). The tile grid, the
tile centres in mm and the blending weights are a data type below ``recon`` and ``io``
(:mod:`napari_fpminr.tile_layout`), which the model files use too.

* :mod:`.local_na`: the illumination NAs seen from a tile's centre;
* :mod:`.source`: lazy per-tile reading of the raw stack;
* :mod:`.worker`: one tile's reconstruction (a dask task) and its files;
* :mod:`.run`: the job, the dask client, the progress generator over tiles;
* :mod:`.assemble`: blending finished tiles into npz/tif/OME-Zarr outputs;
* :mod:`.pyramid`: a mosaic's pyramid levels decoded at their own resolution (area averages),
  batched and cached, for browsing;
* :mod:`.focus`: all-in-focus of a mosaic per tile, blended; its best-focus map as text;
* :mod:`.synthetic`: an untrained mosaic of a known field (tests, benchmarks).
"""
