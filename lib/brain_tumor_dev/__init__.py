"""Developer tooling kept out of the runtime package: benchmarks, the active-learning
simulation and the runner that starts real servers for tests and benchmarks.

Run it as ``brain-tumor-dev COMMAND`` (see ``brain_tumor_dev.cli``). It assumes a source
checkout (it starts ``apps/brain_tumor`` from the repository); the runtime package
``brain_tumor_mri`` never imports it.
"""
