"""Everything that touches MONAI Label or FastAPI, and nothing else.

The rest of ``brain_tumor_mri`` imports without monailabel or fastapi installed (a test
keeps it so); this subpackage adapts the library to MONAI Label's task interfaces
(infer, train, strategy, scoring, datastore) and to its FastAPI server. ``compat`` checks
at app start that the MONAI Label internals these adapters rely on are still there.
"""
