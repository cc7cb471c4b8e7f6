"""The cortex side: voxel geometry from pycortex, flatmap images, the WebGL viewer, the bin palette."""
