"""Sources: the catalog of public datasets, one lister per layout, readers per format, staging and S3
mirrors, and the five synthetic sample sources."""
