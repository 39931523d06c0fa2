"""Whole slides: overlapping tiles, each with its own illumination angles, run on dask.

Modules (import them directly; this package imports nothing on its own, so that
``io.mosaic_file`` can use :mod:`.layout` without pulling in the runner):

* :mod:`.layout`: the tile grid, tile centres in mm, blending weights;
* :mod:`.local_na`: the illumination NAs seen from a tile's centre;
* :mod:`.source`: lazy per-tile reading of the raw stack;
* :mod:`.worker`: one tile's reconstruction (a dask task) and its files;
* :mod:`.run`: the job, the dask client, the progress generator over tiles;
* :mod:`.assemble`: blending finished tiles into npz/tif/OME-Zarr outputs.
"""
