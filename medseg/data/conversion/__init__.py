"""Converting public datasets into medseg's layouts (datalists, stacks): BraTS (brats.py), ISBI 2012 (isbi2012.py),
the GALA FIB-SEM volume (fibsem.py). Each is also a script: `python -m medseg.data.conversion.isbi2012 SRC DST`."""
