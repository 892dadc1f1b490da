"""Training: one engine for every model, split by stage (entry point: ``run.run_training``).

options (``TrainOptions``) -> cases (specs, split, replay) -> cache / cache_file / store
(preprocessed cases on disk, RAM within a budget) -> sampler / datasets (streaming
patches or images) -> step (precision, DDP) -> engine (the loop) -> validation ->
publish (pluggable rule) -> runlog / result; launch (processes on one node) and
distributed (torchrun groups). Per model: seg_model / seg_data, class_model /
class_entries / class_data.
"""
