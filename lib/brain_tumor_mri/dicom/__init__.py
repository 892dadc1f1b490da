"""Pure DICOM code: recognising MR sequences, series to volumes, DICOM SEG and SR, a DICOMweb client.

Nothing here imports MONAI Label; ``server/dicomweb_datastore.py`` adapts it to MONAI
Label's datastore interface.
"""
