"""Data: the TAU layout reader, the built-in synthetic data set, the feature cache and the teacher cache."""
