"""DICOM through pydicom, in the manner of MONAI's image readers: series to RAS+ volumes, SEG and RTSTRUCT to
label volumes aligned with them, single images in modality units, reading only allow-listed header elements.

``header`` holds the allow-list and reads headers within the limits; ``series`` groups files into series and reads
one as a ``Volume`` (``geometry`` places its frames, ``pixels`` decodes them); ``annotations`` turns a SEG or an
RTSTRUCT into labels; ``image`` reads a single 2D image; ``inputs`` reads a listed input with them."""
