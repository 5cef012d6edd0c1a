"""Files in and out: the model file and its manifest, datasets, photos, paths, results and their cache."""
