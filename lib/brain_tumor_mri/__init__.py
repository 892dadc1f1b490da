"""Brain-tumour MRI segmentation and classification for MONAI Label.

The package holds everything the MONAI Label app in ``apps/brain_tumor`` wires together:
label conventions, the datastore layout for multi-sequence cases, preprocessing shared by
inference and training, networks, infer/train tasks, active learning and the CLI.
"""

__version__ = "0.1.0"
