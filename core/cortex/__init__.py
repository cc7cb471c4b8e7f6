"""The cortex side: voxel geometry from pycortex, flatmap images and the WebGL viewer (bins coloured by
:mod:`core.vocabulary`)."""
