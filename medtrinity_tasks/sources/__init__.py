"""Sources: the catalog of public datasets, the synthetic sample source, and readers per format."""
